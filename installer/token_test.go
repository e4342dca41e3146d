package installer

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// fakeAccess is the cluster through a fake clientset that holds
// cluster-info, as init leaves it, and a made-up CA's hash.
func fakeAccess(t *testing.T) *clusterAccess {
	t.Helper()
	block, _ := pem.Decode(selfSignedCA(t))
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	info := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.ConfigMapClusterInfo, Namespace: metav1.NamespacePublic},
		Data: map[string]string{bootstrapapi.KubeConfigKey: "apiVersion: v1\nkind: Config\n"}}
	return &clusterAccess{client: fake.NewClientset(info), caHash: pki.CAHashOf(ca)}
}

// tokenSecrets are the bootstrap token Secrets in cs.
func tokenSecrets(t *testing.T, cs kubernetes.Interface) []corev1.Secret {
	t.Helper()
	list, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Secret
	for _, s := range list.Items {
		if s.Type == bootstrapapi.SecretTypeBootstrapToken {
			out = append(out, s)
		}
	}
	return out
}

// A join's token travels to the host it joins, which may be the one an
// attacker controls; what the token is worth there is one node's identity,
// once. Every join, worker or master, gets a token of its own, bound to its
// host's name alone and not in kubeadm's default group (whose CSRs the
// controller-manager approves for any node name); it exists while the join
// runs and is gone once the join is over, whether the join succeeded or
// failed. The tokens init and upload-certs print, bound to no node, are
// deleted as soon as they are made; nothing is left for the credentials
// phase, and cluster-info is signed for no token.
func TestJoinTokensAreBoundAndSingleUse(t *testing.T) {
	const initToken, cpToken, certKey = "abcdef.0123456789abcdef", "ghijkl.0123456789ghijkl", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	ctx := context.Background()
	acc := fakeAccess(t)
	cs := acc.client
	// What init and upload-certs do on the primary: make an unbound token
	// and print it.
	makes := func(token string) func(string, string) {
		return func(string, string) {
			tok, err := pki.ParseToken(token)
			if err != nil {
				t.Error(err)
				return
			}
			if err := master.EnsureBootstrapToken(ctx, cs, master.BootstrapToken{ID: tok.ID(), Secret: tok.Secret(), TTL: time.Hour}, time.Now()); err != nil {
				t.Error(err)
			}
		}
	}
	_, pcfg := newFakeHost(t,
		fakeRule{contains: "upload-certs", do: makes(cpToken), stdout: "printf '%s\\n%s\\n' '" + cpToken + "' '" + certKey + "' | anvil join https://10.0.0.1:6443 --control-plane\n"},
		fakeRule{contains: " init -f ", do: makes(initToken), stdout: "  echo '" + initToken + "' | anvil join https://10.0.0.1:6443 --token-file -\n"},
	)
	// While a join runs, the token on its stdin is one Secret, bound to
	// the joining host alone.
	seen := map[string]string{} // host → the token its join was given
	bound := func(host string) func(string, string) {
		return func(_, stdin string) {
			tok, err := pki.ParseToken(strings.SplitN(stdin, "\n", 2)[0])
			if err != nil {
				t.Errorf("%s: the join's stdin starts with no token: %v", host, err)
				return
			}
			seen[host] = tok.Reveal()
			s, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, bootstrapapi.BootstrapTokenSecretPrefix+tok.ID(), metav1.GetOptions{})
			if err != nil {
				t.Errorf("%s: the token of its join does not exist while it runs: %v", host, err)
				return
			}
			groups := string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey])
			if want := approver.NodeBootstrapGroupPrefix + host; groups != want {
				t.Errorf("%s: its join's token has the groups %q, want %q alone", host, groups, want)
			}
			exp, err := time.Parse(time.RFC3339, string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]))
			if err != nil || time.Until(exp) > 10*time.Minute {
				t.Errorf("%s: its join's token expires %v (%v), want within the run's TokenTTL", host, exp, err)
			}
		}
	}
	_, w1cfg := newFakeHost(t, fakeRule{contains: " join https://", do: bound("w1")})
	_, w2cfg := newFakeHost(t, fakeRule{contains: " join https://", do: bound("w2"), status: 1, stdout: "tls-bootstrap: the CSR was denied\n"})
	_, m2cfg := newFakeHost(t,
		fakeRule{contains: "join --help", stdout: "--control-plane --certificate-key-file --token-file"},
		fakeRule{contains: " join https://", do: bound("m2")},
	)

	_, w3cfg := newFakeHost(t, fakeRule{contains: " join https://", do: bound("w3"), status: 1, stdout: "tls-bootstrap: CSR denied: Node w3 already exists\n"})
	r, _ := newTestRun(t, "m1", "w1", "w2", "m2", "w3")
	for i, cfg := range []sshx.Config{pcfg, w1cfg, w2cfg, m2cfg, w3cfg} {
		r.hosts[i].client = dialFake(t, cfg)
	}
	for _, h := range r.hosts {
		h.facts = &Facts{}
	}
	r.primary = r.hosts[0]
	r.acc = acc
	r.apply = &applyState{o: ApplyOptions{Timeout: time.Minute, TokenTTL: 10 * time.Minute}, bundle: &bundle{version: "v1.37.2"}, clusterFile: []byte("name: t\n")}

	pl := planInit(r)
	if len(pl.steps) != 1 || pl.steps[0].run == nil {
		t.Fatalf("init plan %+v", pl.steps)
	}
	if res, err := pl.steps[0].run(ctx); err != nil || !strings.Contains(res, "join token deleted") {
		t.Fatalf("init: %q, %v", res, err)
	}
	if left := tokenSecrets(t, cs); len(left) > 0 {
		t.Errorf("init's token is left after init: %s", left[0].Name)
	}
	if res, err := r.joinMaster(ctx, r.hosts[3]); err != nil || !strings.Contains(res, "token deleted") {
		t.Errorf("m2: %q, %v", res, err)
	}
	if res, err := r.joinWorker(ctx, r.hosts[1]); err != nil || !strings.Contains(res, "token deleted") {
		t.Errorf("w1: %q, %v", res, err)
	}
	if _, err := r.joinWorker(ctx, r.hosts[2]); err == nil {
		t.Error("w2's join failed, yet joinWorker did not")
	}

	// A worker whose Node is left from an earlier life of the machine: its
	// join is denied, and the operator is told what to do.
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w3"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.joinWorker(ctx, r.hosts[4]); !errors.Is(err, ErrStaleNode) || !strings.Contains(err.Error(), "kubectl delete node w3") {
		t.Errorf("w3, whose Node existed: %v", err)
	}

	if len(seen) != 4 || len(slices.Compact(slices.Sorted(maps.Values(seen)))) != 4 {
		t.Errorf("the joins were given the tokens %v, want one each", seen)
	}
	for _, s := range tokenSecrets(t, cs) {
		t.Errorf("token left after the joins: %s (%s)", s.Name, s.Data[bootstrapapi.BootstrapTokenDescriptionKey])
	}
	ci, err := cs.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range ci.Data {
		if strings.HasPrefix(k, bootstrapapi.JWSSignatureKeyPrefix) {
			t.Errorf("cluster-info is still signed for a deleted token: %s", k)
		}
	}
	if tokens, _ := r.apply.made.made(); len(tokens) > 0 {
		t.Errorf("tokens %v left for the credentials phase", tokens)
	}
	want := []string{"abcdef", "ghijkl"}
	for _, h := range []string{"m2", "w1", "w2", "w3"} {
		tok, _ := pki.ParseToken(seen[h])
		want = append(want, tok.ID())
	}
	if got := r.apply.made.deleted(); !slices.Equal(got, want) {
		t.Errorf("deleted %v, want %v", got, want)
	}
}
