package master

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/pki"
)

// MaxTokenTTL is the longest a bootstrap token may live. A join token is a
// credential anyone who sees it may join a machine with until it expires:
// a day covers a join done by hand, and one that must never expire is one
// nobody remembers to delete.
const MaxTokenTTL = 24 * time.Hour

// ErrNoToken means no bootstrap token has the ID asked for.
var ErrNoToken = errors.New("no bootstrap token")

// CheckTokenTTL says whether ttl is a lifetime a bootstrap token may have:
// more than zero (every token expires) and at most MaxTokenTTL.
func CheckTokenTTL(ttl time.Duration) error {
	switch {
	case ttl <= 0:
		return fmt.Errorf("a bootstrap token must expire: a TTL of %s would make one that never does (give one up to %s)", ttl, MaxTokenTTL)
	case ttl > MaxTokenTTL:
		return fmt.Errorf("a bootstrap token lives at most %s, not %s", MaxTokenTTL, ttl)
	}
	return nil
}

// TokenOptions say what token CreateToken makes.
type TokenOptions struct {
	// TTL is how long the token is valid, from now: more than zero and at
	// most MaxTokenTTL.
	TTL         time.Duration
	Description string
	// Node binds the token to the join of the node of that name (see
	// BootstrapToken.Node); empty makes kubeadm's kind of token, whose
	// holder may obtain a client certificate for any node name.
	Node string
}

// TokenInfo describes a bootstrap token without its secret.
type TokenInfo struct {
	ID      string    `json:"id"`
	Expires time.Time `json:"expires,omitzero"`
	Expired bool      `json:"expired"`
	Usages  []string  `json:"usages"`
	Groups  []string  `json:"groups"`
	// Node is the node the token is bound to; empty for a token any node
	// may join with.
	Node        string `json:"node,omitempty"`
	Description string `json:"description,omitempty"`
}

// CreateToken makes a new bootstrap token for node joins, valid for o.TTL
// from now, and signs cluster-info for it.
func CreateToken(ctx context.Context, cs kubernetes.Interface, o TokenOptions, now time.Time) (pki.Token, error) {
	bt := BootstrapToken{TTL: o.TTL, Description: o.Description, Node: o.Node}
	if _, err := bt.check(); err != nil {
		return pki.Token{}, err
	}
	tok, err := pki.GenerateToken()
	if err != nil {
		return pki.Token{}, err
	}
	bt.ID, bt.Secret = tok.ID(), tok.Secret()
	if err := EnsureBootstrapToken(ctx, cs, bt, now); err != nil {
		return pki.Token{}, fmt.Errorf("create token %s: %w", tok.ID(), err)
	}
	if err := ResignClusterInfo(ctx, cs, now); err != nil {
		// The caller never learns of this token: it must not stay valid.
		name := bootstrapapi.BootstrapTokenSecretPrefix + tok.ID()
		if derr := cs.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			return pki.Token{}, fmt.Errorf("%w (and token %s, made before, could not be deleted: %v)", err, tok.ID(), derr)
		}
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
		for _, g := range ti.Groups {
			if n, err := approver.NodeFromBootstrapGroup(g); err == nil {
				ti.Node = n
			}
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
		return fmt.Errorf("%w with id %q", ErrNoToken, id)
	}
	if err != nil {
		return err
	}
	return ResignClusterInfo(ctx, cs, now)
}
