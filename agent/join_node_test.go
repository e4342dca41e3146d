package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
)

func TestJoinPhasesByRuntime(t *testing.T) {
	none := JoinPhaseNames(v1alpha1.RuntimeNone)
	if want := []string{"preflight", "discovery", "tls-bootstrap", "kubeconfig", "agent", "wait"}; !slices.Equal(none, want) {
		t.Errorf("runtime none: phases %v, want %v (as before the node stack)", none, want)
	}
	pods := JoinPhaseNames(v1alpha1.RuntimeContainerd)
	if want := []string{"preflight", "discovery", "node-config", "tls-bootstrap", "kubeconfig", "node", "agent", "wait"}; !slices.Equal(pods, want) {
		t.Errorf("runtime containerd: phases %v, want %v", pods, want)
	}
	for _, p := range pods {
		if !strings.Contains(JoinPhaseHelp(), p) {
			t.Errorf("--help lacks phase %s", p)
		}
	}
}

// nodeConfigServer is a fake apiserver whose cluster publishes the node
// settings (publish false: masters that predate them), readable with the
// token or a node's certificate.
func nodeConfigServer(t *testing.T, ca *testCA, tok pki.Token, publish bool) *fakeAPIServer {
	t.Helper()
	srv := newFakeAPIServer(t, ca, ca)
	srv.info = clusterInfo(t, srv.URL(), ca.pem(), map[string]string{testTokenID: testTokenSecret})
	srv.token = tok.Reveal()
	cc := node.ClusterConfig{KubernetesVersion: images.DefaultVersion, ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
		PodCIDR: netip.MustParsePrefix("10.244.0.0/16"), ClusterDomain: "cluster.local", Network: v1alpha1.PodNetworkHostGW}
	cm, err := cc.ConfigMap()
	if err != nil {
		t.Fatal(err)
	}
	srv.extra = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != nodeConfigPath {
			return false
		}
		authed := r.Header.Get("Authorization") == "Bearer "+tok.Reveal() || r.TLS != nil && len(r.TLS.PeerCertificates) > 0
		switch {
		case !authed:
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		case !publish:
			writeStatus(w, http.StatusNotFound, "NotFound", `configmaps "anvil-node-config" not found`)
		default:
			json.NewEncoder(w).Encode(cm)
		}
		return true
	}
	return srv
}

// fakeNodeBinaries puts empty files where the node stack's binaries are,
// as the worker payload would.
func fakeNodeBinaries(t *testing.T, root hostfs.Root) {
	t.Helper()
	dir := root.Bin(images.DefaultVersion)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{images.Containerd, images.Kubelet, images.Ctr} {
		if err := os.WriteFile(filepath.Join(dir, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// tree lists every path under root.
func tree(t *testing.T, root hostfs.Root) []string {
	t.Helper()
	var out []string
	filepath.Walk(string(root), func(p string, _ os.FileInfo, err error) error {
		out = append(out, p)
		return err
	})
	return out
}

func runPhases(ctx context.Context, j *joinRun, phases ...func(context.Context, *joinRun) error) error {
	for _, p := range phases {
		if err := p(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

// TestJoinNodeConfigAndKubeletCertificate: with runtime containerd the
// join reads the node settings with the token from the verified endpoint
// and gets the kubelet a certificate of its own, for the same node, with a
// key of its own; the token is on no disk.
func TestJoinNodeConfigAndKubeletCertificate(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	tok := mustToken(t, testTokenID+"."+testTokenSecret)
	srv := nodeConfigServer(t, ca, tok, true)
	root := hostfs.Root(t.TempDir())
	fakeNodeBinaries(t, root)
	j, err := newJoinRun(JoinOptions{Endpoint: srv.URL(), Token: tok, CAHash: pki.CAHashOf(ca.cert), NodeName: "w1", NodeIP: netip.MustParseAddr("10.0.0.5"),
		Labels: map[string]string{"tier": "web", "node-role.kubernetes.io/worker": ""},
		Root:   root, Layout: v1alpha1.LayoutProcess, Anvil: "/bin/false", CSRTimeout: 5 * time.Second, Runtime: v1alpha1.RuntimeContainerd})
	if err != nil {
		t.Fatal(err)
	}
	if err := runPhases(context.Background(), j, joinPreflight, joinDiscovery, joinNodeConfig, joinTLSBootstrap, joinKubeconfig); err != nil {
		t.Fatal(err)
	}
	if j.node == nil || j.node.cc.PodCIDR.String() != "10.244.0.0/16" || j.node.plan.NodeIP.String() != "10.0.0.5" {
		t.Fatalf("node setup %+v", j.node)
	}
	if _, ok := j.node.plan.Host.Labels["node-role.kubernetes.io/worker"]; ok || j.node.plan.Host.Labels["tier"] != "web" {
		t.Errorf("the kubelet is given labels %v: only those NodeRestriction lets it set", j.node.plan.Host.Labels)
	}
	k := j.node.kubelet
	if k.Server != j.creds.Server || string(k.CAPEM) != string(j.creds.CAPEM) {
		t.Errorf("kubelet server %s and CA differ from the agent's %s", k.Server, j.creds.Server)
	}
	kubelet := Credentials{Server: k.Server, CAPEM: k.CAPEM, CertPEM: k.CertPEM, KeyPEM: k.KeyPEM}
	if why := credentialsMismatch(kubelet, pki.CAHashOf(ca.cert), "w1", time.Now()); why != "" {
		t.Errorf("kubelet credentials: %s", why)
	}
	if string(k.KeyPEM) == string(j.creds.KeyPEM) || string(k.CertPEM) == string(j.creds.CertPEM) {
		t.Error("the kubelet shares the agent's key or certificate")
	}
	var csrs, configReads int
	for _, r := range srv.requests() {
		if r.Method == "POST" && r.Path == csrPath {
			csrs++
		}
		if r.Path == nodeConfigPath {
			configReads++
			if r.Authorization == "" {
				t.Error("the node settings were read without the token")
			}
		}
	}
	if csrs != 2 || configReads != 1 {
		t.Errorf("%d CSRs and %d reads of the node settings, want 2 and 1", csrs, configReads)
	}
	for _, p := range tree(t, root) {
		if b, _ := os.ReadFile(p); strings.Contains(string(b), testTokenSecret) {
			t.Errorf("%s holds the token's secret", p)
		}
	}
}

// TestJoinWithoutNodeConfig: masters that never published the node
// settings make a runtime containerd join fail with ErrNoNodeConfig before
// any CSR is sent or anything written.
func TestJoinWithoutNodeConfig(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	tok := mustToken(t, testTokenID+"."+testTokenSecret)
	srv := nodeConfigServer(t, ca, tok, false)
	root := hostfs.Root(t.TempDir())
	fakeNodeBinaries(t, root)
	before := tree(t, root)
	_, err := Join(context.Background(), JoinOptions{Endpoint: srv.URL(), Token: tok, CAHash: pki.CAHashOf(ca.cert), NodeName: "w1", NodeIP: netip.MustParseAddr("10.0.0.5"),
		Root: root, Layout: v1alpha1.LayoutProcess, Anvil: "/bin/false", CSRTimeout: 5 * time.Second, DiscoveryTimeout: 5 * time.Second, Runtime: v1alpha1.RuntimeContainerd})
	if !errors.Is(err, ErrNoNodeConfig) {
		t.Fatalf("join: %v, want ErrNoNodeConfig", err)
	}
	for _, want := range []string{"anvil-node-config", "predates", "--runtime none", "phase node-config"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	for _, r := range srv.requests() {
		if r.Path == csrPath {
			t.Errorf("a CSR was sent: %s %s", r.Method, r.Path)
		}
	}
	if after := tree(t, root); !slices.Equal(before, after) {
		t.Errorf("the failed join wrote %v", after[len(before):])
	}
}

// TestJoinDryRun: a dry run reads (and with runtime containerd reads the
// node settings too), sends no CSR, writes nothing, and says what the
// other phases would do; the node phase only with runtime containerd.
func TestJoinDryRun(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	tok := mustToken(t, testTokenID+"."+testTokenSecret)
	for _, rt := range []v1alpha1.Runtime{v1alpha1.RuntimeContainerd, v1alpha1.RuntimeNone} {
		t.Run(string(rt), func(t *testing.T) {
			srv := nodeConfigServer(t, ca, tok, true)
			root := hostfs.Root(t.TempDir())
			fakeNodeBinaries(t, root)
			before := tree(t, root)
			res, err := Join(context.Background(), JoinOptions{Endpoint: srv.URL(), Token: tok, CAHash: pki.CAHashOf(ca.cert), NodeName: "w1", NodeIP: netip.MustParseAddr("10.0.0.5"),
				Root: root, Layout: v1alpha1.LayoutProcess, Anvil: "/bin/false", DiscoveryTimeout: 5 * time.Second, Runtime: rt, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			plan := strings.Join(res.Plan, "\n")
			var phases []string
			for _, l := range res.Plan {
				name, _, _ := strings.Cut(l, ":")
				phases = append(phases, name)
			}
			want := []string{"tls-bootstrap", "kubeconfig", "agent", "wait"}
			if rt == v1alpha1.RuntimeContainerd {
				want = []string{"tls-bootstrap", "kubeconfig", "node", "agent", "wait"}
				if !strings.Contains(plan, "the kubelet's") || !strings.Contains(plan, "runtime containerd, network host-gw, pod CIDR 10.244.0.0/16") {
					t.Errorf("plan lacks the kubelet's certificate or the agent's settings:\n%s", plan)
				}
			}
			if !slices.Equal(phases, want) {
				t.Errorf("planned phases %v, want %v:\n%s", phases, want, plan)
			}
			reads := 0
			for _, r := range srv.requests() {
				if r.Path == csrPath {
					t.Errorf("a dry run sent %s %s", r.Method, r.Path)
				}
				if r.Path == nodeConfigPath {
					reads++
				}
			}
			if wantReads := map[v1alpha1.Runtime]int{v1alpha1.RuntimeContainerd: 1, v1alpha1.RuntimeNone: 0}[rt]; reads != wantReads {
				t.Errorf("%d reads of the node settings, want %d", reads, wantReads)
			}
			if after := tree(t, root); !slices.Equal(before, after) {
				t.Errorf("a dry run wrote %v", after)
			}
		})
	}
}
