package agent

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"k8s.io/cluster-bootstrap/token/jws"

	"anvil.dev/anvil/pki"
)

// FuzzClusterInfo feeds discovery what an untrusted server may send as
// kube-public/cluster-info, before anything about the server is known:
// it must never panic, never show the token's secret, and accept only a
// kubeconfig signed with the token whose CA is the pinned one.
func FuzzClusterInfo(f *testing.F) {
	ca := newTestCA(f, "kubernetes")
	other := newTestCA(f, "impostor")
	tok := mustToken(f, testTokenID+"."+testTokenSecret)
	pin := pki.CAHashOf(ca.cert)
	seed := func(caPEM []byte, sign map[string]string) {
		b, err := json.Marshal(clusterInfo(f, "https://10.0.0.1:6443", caPEM, sign))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(ca.pem(), map[string]string{testTokenID: testTokenSecret})
	seed(ca.pem(), map[string]string{testTokenID: "ffffffffffffffff"})
	seed(other.pem(), map[string]string{testTokenID: testTokenSecret})
	seed(append(other.pem(), ca.pem()...), map[string]string{testTokenID: testTokenSecret, "zzzzzz": "0000000000000000"})
	seed(ca.pem(), nil)
	f.Add([]byte(`{"data":{"kubeconfig":"","jws-kubeconfig-abcdef":"a..b"}}`))
	f.Add([]byte(`{"data":{"kubeconfig":"clusters: [{cluster: {server: x}}]"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		content, sigs, err := decodeClusterInfo("https://10.0.0.1:6443", data)
		if err != nil {
			return
		}
		server, got, err := verifyClusterInfo("https://10.0.0.1:6443", content, sigs, tok, pin)
		if err != nil {
			if strings.Contains(err.Error(), testTokenSecret) {
				t.Fatalf("error shows the token's secret: %v", err)
			}
			if !errors.Is(err, ErrTokenUnknown) && !errors.Is(err, ErrTokenMismatch) && !errors.Is(err, ErrCAHashMismatch) && !strings.Contains(err.Error(), "cluster-info at ") {
				t.Fatalf("error %v does not say what was wrong with cluster-info", err)
			}
			return
		}
		if got == nil || !pin.Matches(got) {
			t.Fatalf("accepted a CA that is not the pinned one: %v", got)
		}
		if !jws.DetachedTokenIsValid(sigs[tok.ID()], content, tok.ID(), tok.Secret()) {
			t.Fatal("accepted cluster-info without the token's signature")
		}
		if s, _, err := parseClusterInfo(content); err != nil || s != server {
			t.Fatalf("server %q, but the kubeconfig says %q (%v)", server, s, err)
		}
	})
}

// FuzzParseEndpoint: whatever an operator types as join's ENDPOINT either
// is refused or becomes a URL the agent's configuration accepts, and
// parsing that URL again gives it back.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"https://10.0.0.1:6443", "10.0.0.1", "k8s.example.com:443", "[fd00::1]", "https://h/path?q", "http://x", "", "://", "[::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseEndpoint(s)
		if err != nil {
			return
		}
		if err := checkServerURL(u); err != nil {
			t.Fatalf("%q became %q, which the configuration refuses: %v", s, u, err)
		}
		if again, err := ParseEndpoint(u); err != nil || again != u {
			t.Fatalf("%q became %q, then %q (%v)", s, u, again, err)
		}
	})
}
