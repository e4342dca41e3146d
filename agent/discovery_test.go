package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/pki"
)

const (
	testTokenID     = "abcdef"
	testTokenSecret = "0123456789abcdef"
)

// TestJoinRefusesImpostors runs Join against apiservers that are not the
// pinned cluster, each stronger than the last, and checks that every one
// is refused before any credential leaves: no Authorization header, no
// client certificate, no request but reads of cluster-info, and nothing
// written on this machine.
func TestJoinRefusesImpostors(t *testing.T) {
	real := newTestCA(t, "real-cluster-ca")
	fake := newTestCA(t, "impostor-ca")
	tok := mustToken(t, testTokenID+"."+testTokenSecret)
	realInfo := func(url string) any {
		return clusterInfo(t, url, real.pem(), map[string]string{testTokenID: testTokenSecret})
	}
	tests := []struct {
		name string
		// info is what the impostor publishes at its own URL.
		info func(url string) any
		want error
	}{
		{"its own CA, unsigned", func(url string) any { return clusterInfo(t, url, fake.pem(), nil) }, ErrTokenUnknown},
		{"its own CA, signed for the token ID with another secret", func(url string) any {
			return clusterInfo(t, url, fake.pem(), map[string]string{testTokenID: "ffffffffffffffff"})
		}, ErrTokenMismatch},
		{"its own CA, signed with the real token (a leaked token)", func(url string) any {
			return clusterInfo(t, url, fake.pem(), map[string]string{testTokenID: testTokenSecret})
		}, ErrCAHashMismatch},
		{"relays the real cluster-info (a machine in the middle)", realInfo, ErrImpostor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			imp := newFakeAPIServer(t, fake, fake)
			imp.token = tok.Reveal() // it would accept the token if it got it
			imp.extra = func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == clusterInfoURLPath {
					json.NewEncoder(w).Encode(tt.info(imp.URL()))
					return true
				}
				return false
			}
			root := t.TempDir()
			_, err := Join(context.Background(), JoinOptions{
				Endpoint: imp.URL(), Token: tok, CAHash: pki.CAHashOf(real.cert), NodeName: "w1",
				Root: hostfs.Root(root), Layout: v1alpha1.LayoutProcess, Anvil: "/bin/false",
				DiscoveryTimeout: 5 * time.Second,
			})
			if !errors.Is(err, tt.want) {
				t.Fatalf("join: %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), testTokenSecret) {
				t.Errorf("the error shows the token's secret: %v", err)
			}
			reqs := imp.requests()
			if len(reqs) == 0 {
				t.Fatal("the impostor saw no request at all")
			}
			for _, r := range reqs {
				if r.Authorization != "" || r.ClientCert || r.Method != "GET" || r.Path != clusterInfoURLPath {
					t.Errorf("the impostor saw %s %s (Authorization %q, client certificate %v)", r.Method, r.Path, r.Authorization, r.ClientCert)
				}
			}
			if entries, _ := os.ReadDir(root); len(entries) > 0 {
				t.Errorf("join wrote %v under the root", entries)
			}
		})
	}
}

// TestDiscover covers what the real cluster may answer.
func TestDiscover(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	tok := mustToken(t, testTokenID+"."+testTokenSecret)
	tests := []struct {
		name  string
		sign  map[string]string
		hash  pki.CAHash
		nilCM bool
		want  error
	}{
		{"signed, pinned", map[string]string{testTokenID: testTokenSecret, "zzzzzz": "0000000000000000"}, pki.CAHashOf(ca.cert), false, nil},
		{"expired or deleted token", map[string]string{"zzzzzz": "0000000000000000"}, pki.CAHashOf(ca.cert), false, ErrTokenUnknown},
		{"wrong pin", map[string]string{testTokenID: testTokenSecret}, pki.CAHashOf(newTestCA(t, "other").cert), false, ErrCAHashMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeAPIServer(t, ca, ca)
			srv.info = clusterInfo(t, "https://cluster.example:6443", ca.pem(), tt.sign)
			ci, err := Discover(context.Background(), DiscoveryOptions{Endpoint: srv.URL(), Token: tok, CAHash: tt.hash, Timeout: 5 * time.Second, SignatureWait: 200 * time.Millisecond})
			if !errors.Is(err, tt.want) {
				t.Fatalf("discover: %v, want %v", err, tt.want)
			}
			if err != nil {
				if errors.Is(err, ErrTokenUnknown) && !strings.Contains(err.Error(), "expired") {
					t.Errorf("an unknown token's error does not say it may have expired: %v", err)
				}
				return
			}
			if !ci.CA.Equal(ca.cert) || ci.Server != "https://cluster.example:6443" || ci.Endpoint != srv.URL() {
				t.Errorf("cluster info %+v", ci)
			}
			if got := ci.Servers("https://m2:6443", srv.URL()); strings.Join(got, ",") != srv.URL()+",https://cluster.example:6443,https://m2:6443" {
				t.Errorf("servers %v", got)
			}
			for _, r := range srv.requests() {
				if r.Authorization != "" || r.ClientCert {
					t.Errorf("discovery sent a credential: %+v", r)
				}
			}
		})
	}
}

// TestDiscoverWaitsForTheServer: an apiserver still starting is waited for
// (cluster-info not there yet), within the timeout.
func TestDiscoverWaitsForTheServer(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	tok := mustToken(t, testTokenID+"."+testTokenSecret)
	srv := newFakeAPIServer(t, ca, ca)
	go func() {
		time.Sleep(700 * time.Millisecond)
		srv.mu.Lock()
		srv.info = clusterInfo(t, srv.URL(), ca.pem(), map[string]string{testTokenID: testTokenSecret})
		srv.mu.Unlock()
	}()
	if _, err := Discover(context.Background(), DiscoveryOptions{Endpoint: srv.URL(), Token: tok, CAHash: pki.CAHashOf(ca.cert), Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	_, err := Discover(context.Background(), DiscoveryOptions{Endpoint: "https://127.0.0.1:1", Token: tok, CAHash: pki.CAHashOf(ca.cert), Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "no answer within 1s") {
		t.Fatalf("a closed port: %v", err)
	}
}

// TestJoinTLSBootstrap runs the join's credential phases against a fake
// apiserver that approves and signs like the controller-manager, or
// denies: the key stays here, the kubeconfig is 0600 and the token is
// nowhere on disk; a denial writes nothing.
func TestJoinTLSBootstrap(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	tok := mustToken(t, testTokenID+"."+testTokenSecret)
	for _, deny := range []bool{false, true} {
		t.Run(map[bool]string{false: "approved", true: "denied"}[deny], func(t *testing.T) {
			srv := newFakeAPIServer(t, ca, ca)
			srv.info = clusterInfo(t, srv.URL(), ca.pem(), map[string]string{testTokenID: testTokenSecret})
			srv.token, srv.deny = tok.Reveal(), deny
			root := hostfs.Root(t.TempDir())
			j, err := newJoinRun(JoinOptions{Endpoint: srv.URL(), Token: tok, CAHash: pki.CAHashOf(ca.cert), NodeName: "w1", Root: root, Layout: v1alpha1.LayoutProcess, Anvil: "/bin/false", CSRTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for _, phase := range []func(context.Context, *joinRun) error{joinPreflight, joinDiscovery, joinTLSBootstrap, joinKubeconfig} {
				if err = phase(ctx, j); err != nil {
					break
				}
			}
			if deny {
				if !errors.Is(err, ErrCSRDenied) {
					t.Fatalf("denied CSR: %v", err)
				}
				if entries, _ := os.ReadDir(string(root)); len(entries) > 0 {
					t.Errorf("a denied join wrote %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			kc := root.Path(KubeconfigFile)
			fi, err := os.Stat(kc)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("kubeconfig %s: %v %v", kc, err, fi)
			}
			creds, err := ReadKubeconfig(kc)
			if err != nil {
				t.Fatal(err)
			}
			if why := credentialsMismatch(creds, pki.CAHashOf(ca.cert), "w1", time.Now()); why != "" {
				t.Errorf("kubeconfig: %s", why)
			}
			if !j.token.IsZero() {
				t.Error("the join still holds the token after writing the kubeconfig")
			}
			filepath.Walk(string(root), func(p string, fi os.FileInfo, err error) error {
				if b, _ := os.ReadFile(p); strings.Contains(string(b), testTokenSecret) {
					t.Errorf("%s holds the token's secret", p)
				}
				return nil
			})
			var sawToken, sawKey bool
			for _, r := range srv.requests() {
				sawToken = sawToken || r.Authorization != ""
				sawKey = sawKey || strings.Contains(string(r.Body), "PRIVATE KEY")
				if r.Authorization != "" && r.Method == "GET" && r.Path == clusterInfoURLPath {
					t.Error("the token was sent with a cluster-info read")
				}
			}
			if !sawToken {
				t.Error("the CSR was not made with the bootstrap token")
			}
			if sawKey {
				t.Error("a private key was sent")
			}
		})
	}
}
