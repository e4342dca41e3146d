package master

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/pki"
)

// TokenInfo describes a bootstrap token without its secret.
type TokenInfo struct {
	ID          string    `json:"id"`
	Expires     time.Time `json:"expires,omitzero"`
	Expired     bool      `json:"expired"`
	Usages      []string  `json:"usages"`
	Groups      []string  `json:"groups"`
	Description string    `json:"description,omitempty"`
}

// CreateToken makes a new bootstrap token for node joins, valid for ttl
// from now (forever when zero), and signs cluster-info for it.
func CreateToken(ctx context.Context, cs kubernetes.Interface, ttl time.Duration, description string, now time.Time) (pki.Token, error) {
	tok, err := pki.GenerateToken()
	if err != nil {
		return pki.Token{}, err
	}
	if err := EnsureBootstrapToken(ctx, cs, BootstrapToken{ID: tok.ID(), Secret: tok.Secret(), TTL: ttl, Description: description}, now); err != nil {
		return pki.Token{}, fmt.Errorf("create token %s: %w", tok.ID(), err)
	}
	if err := ResignClusterInfo(ctx, cs, now); err != nil {
		return pki.Token{}, err
	}
	return tok, nil
}

// ListTokens lists the bootstrap tokens, oldest expiry first, each marked
// expired or not at now.
func ListTokens(ctx context.Context, cs kubernetes.Interface, now time.Time) ([]TokenInfo, error) {
	list, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{
		FieldSelector: "type=" + string(bootstrapapi.SecretTypeBootstrapToken),
	})
	if err != nil {
		return nil, err
	}
	var out []TokenInfo
	for _, s := range list.Items {
		ti := TokenInfo{ID: string(s.Data[bootstrapapi.BootstrapTokenIDKey]), Description: string(s.Data[bootstrapapi.BootstrapTokenDescriptionKey])}
		if exp := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]); exp != "" {
			if t, err := time.Parse(time.RFC3339, exp); err == nil {
				ti.Expires, ti.Expired = t, now.After(t)
			}
		}
		for _, u := range []struct{ key, name string }{
			{bootstrapapi.BootstrapTokenUsageAuthentication, "authentication"},
			{bootstrapapi.BootstrapTokenUsageSigningKey, "signing"},
		} {
			if string(s.Data[u.key]) == "true" {
				ti.Usages = append(ti.Usages, u.name)
			}
		}
		if g := string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]); g != "" {
			ti.Groups = strings.Split(g, ",")
		}
		out = append(out, ti)
	}
	slices.SortFunc(out, func(a, b TokenInfo) int { return a.Expires.Compare(b.Expires) })
	return out, nil
}

// DeleteToken removes a bootstrap token, given its ID or the whole token,
// and withdraws its cluster-info signature.
func DeleteToken(ctx context.Context, cs kubernetes.Interface, idOrToken string, now time.Time) error {
	id := idOrToken
	if t, err := pki.ParseToken(idOrToken); err == nil {
		id = t.ID()
	}
	err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, bootstrapapi.BootstrapTokenSecretPrefix+id, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no bootstrap token with id %q", id)
	}
	if err != nil {
		return err
	}
	return ResignClusterInfo(ctx, cs, now)
}
