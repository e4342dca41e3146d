package installer

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// Phase credentials: once every join of the run is over, successful or
// not, delete the bootstrap credentials the run made that are still
// there: the control-plane certificates `anvil init phase upload-certs`
// sealed into the cluster (with the token that owns them), and any token
// whose deletion right after its use failed (init's, upload-certs', each
// join's: see token.go). A join token outliving its joins is a credential
// anyone who saw it could still join a machine with; these would expire
// on their own (the run's TokenTTL, an hour for the certificates), but a
// run that knows it is done with them removes them at once. A later run
// that needs to join a host makes fresh ones.

// credentials are what the run made and the credentials phase removes.
type credentials struct {
	mu sync.Mutex
	// tokens are the IDs of the bootstrap tokens made, in order.
	tokens []string
	// certs is set once upload-certs ran: kube-system/anvil-certs exists.
	certs bool
	// gone are the IDs of the tokens deleted, in order.
	gone []string
}

func (c *credentials) addToken(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id != "" && !slices.Contains(c.tokens, id) {
		c.tokens = append(c.tokens, id)
	}
}

func (c *credentials) uploadedCerts() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.certs = true
}

func (c *credentials) deletedTokens(ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if !slices.Contains(c.gone, id) {
			c.gone = append(c.gone, id)
		}
	}
}

func (c *credentials) deleted() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.gone...)
}

// made are the tokens made and not deleted yet, and whether the sealed
// certificates were uploaded.
func (c *credentials) made() ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var left []string
	for _, id := range c.tokens {
		if !slices.Contains(c.gone, id) {
			left = append(left, id)
		}
	}
	return left, c.certs
}

// makesCredentials reports whether a phase's changes make bootstrap
// credentials: the phases that make a master or join a node.
func makesCredentials(phase string) bool {
	return phase == "init" || phase == "join-masters" || phase == "join-workers"
}

func planCredentials(r *run) plan {
	p := r.primary
	if p == nil || p.failed() {
		return plan{}
	}
	planned := slices.ContainsFunc(r.planned, func(s PlannedStep) bool {
		return s.Change && makesCredentials(s.Phase)
	})
	if !planned {
		return plan{steps: []step{{host: p, do: "nothing to do: this run makes no join token"}}}
	}
	return plan{steps: []step{{host: p, do: "delete the uploaded control-plane certificates and any join token this run made and still left", run: func(ctx context.Context) (string, error) {
		return r.deleteCredentials(ctx)
	}}}}
}

// deleteCredentials removes what the run made, through the primary's
// admin kubeconfig.
func (r *run) deleteCredentials(ctx context.Context) (string, error) {
	tokens, certs := r.apply.made.made()
	if len(tokens) == 0 && !certs {
		return "none left: each was deleted once its use was over", nil
	}
	acc, err := r.access(ctx)
	if err != nil {
		return "", err
	}
	secrets := acc.client.CoreV1().Secrets(metav1.NamespaceSystem)
	if certs {
		// The Secret is owned by a token upload-certs made for it, and
		// named nowhere else; deleting the Secret too does not wait for
		// the garbage collector.
		s, err := secrets.Get(ctx, master.CertsSecretName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return "", fmt.Errorf("read the uploaded certificates (kube-system/%s): %w", master.CertsSecretName, err)
		default:
			for _, o := range s.OwnerReferences {
				if id, ok := strings.CutPrefix(o.Name, bootstrapapi.BootstrapTokenSecretPrefix); ok && o.Kind == "Secret" && !slices.Contains(tokens, id) {
					tokens = append(tokens, id)
				}
			}
			if err := secrets.Delete(ctx, master.CertsSecretName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return "", fmt.Errorf("delete the uploaded certificates (kube-system/%s): %w", master.CertsSecretName, err)
			}
		}
	}
	for _, id := range tokens {
		name := bootstrapapi.BootstrapTokenSecretPrefix + id
		if err := secrets.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("delete bootstrap token %s (kube-system/%s): %w", id, name, err)
		}
	}
	// cluster-info still carries a signature for each deleted token; the
	// controller-manager's bootstrap signer may be rewriting it at the
	// same moment, which is a conflict worth a few tries.
	for try := 0; ; try++ {
		err := master.ResignClusterInfo(ctx, acc.client, time.Now())
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) || try == 4 {
			return "", fmt.Errorf("re-sign cluster-info without the deleted tokens: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Duration(try+1) * 200 * time.Millisecond):
		}
	}
	r.apply.made.deletedTokens(tokens)
	res := fmt.Sprintf("deleted %d join tokens (%s)", len(tokens), strings.Join(tokens, ", "))
	if certs {
		res += " and the uploaded certificates"
	}
	return res, nil
}

// tokenRE finds bootstrap tokens (id.secret) in what a command printed.
var tokenRE = regexp.MustCompile(`(?:^|[^a-z0-9.])([a-z0-9]{6}\.[a-z0-9]{16})(?:[^a-z0-9.]|$)`)

// findToken is the first bootstrap token in out: the one `anvil init` and
// `anvil init phase upload-certs` print in the join command they show.
func findToken(out string) (pki.Token, bool) {
	for _, m := range tokenRE.FindAllStringSubmatch(out, -1) {
		if t, err := pki.ParseToken(m[1]); err == nil {
			return t, true
		}
	}
	return pki.Token{}, false
}
