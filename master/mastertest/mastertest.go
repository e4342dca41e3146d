package mastertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/netnstest"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// Options shape the control plane.
type Options struct {
	// Anvil is a built anvil binary; BuildAnvil makes one when empty.
	Anvil string
	// Network is shared with other machines of the test (workers); a new
	// one when nil.
	Network *netnstest.Network
	// Extra flags per component, as the cluster file's extraArgs.
	APIServerArgs, ControllerManagerArgs, SchedulerArgs map[string]string
	// Timeout bounds init's wait (2 minutes when zero).
	Timeout time.Duration
	// NoCleanup leaves the control plane running (for tests that reset it
	// themselves and check what is left).
	NoCleanup bool
}

// ControlPlane is a running single-master control plane.
type ControlPlane struct {
	Network *netnstest.Network
	NS      *netnstest.NS
	Root    hostfs.Root
	Anvil   string
	Cluster *v1alpha1.Cluster
	// ClusterFile is the cluster file init ran with.
	ClusterFile string
	// URL is the apiserver's https URL on the namespace's address.
	URL             string
	AdminKubeconfig string
	CAHash          pki.CAHash
	// InitOutput is what init printed (stdout, then stderr).
	InitOutput string
	// InitElapsed is how long `anvil init` took, end to end.
	InitElapsed time.Duration

	timeout time.Duration
}

// KubeBinDir is the build of the supported version in this checkout
// (bin/kube/<version>), found from the test's working directory.
func KubeBinDir(t testing.TB) string {
	t.Helper()
	dir, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(dir, "bin", "kube", images.DefaultVersion)
	if _, err := images.ReadManifest(d); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the Kubernetes components are not built (make kube): %v", err)
		}
		t.Skipf("the Kubernetes components are not built (run make kube): %v", err)
	}
	return d
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module anvil.dev/anvil\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the anvil checkout")
		}
		dir = parent
	}
}

// BinaryEnv names an anvil binary the tests use instead of building one
// (make test sets it to the bin/anvil it built).
const BinaryEnv = "ANVIL_TEST_BINARY"

// BuildAnvil returns the anvil binary to test: $ANVIL_TEST_BINARY when set,
// else one built into a temporary directory (Go's cache makes that a link
// step when nothing changed).
func BuildAnvil(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v", BinaryEnv, err)
		}
		return p
	}
	dir, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "anvil")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/anvil")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build anvil: %v\n%s", err, b)
	}
	return out
}

// Start brings up a control plane and registers its teardown.
func Start(t testing.TB, o Options) *ControlPlane {
	t.Helper()
	cp := Prepare(t, o)
	cp.Init(t)
	return cp
}

// Prepare makes everything Start does except running init: the namespace,
// the root with the binaries installed, and the cluster file. Tests that
// watch init fail run it themselves.
func Prepare(t testing.TB, o Options) *ControlPlane {
	t.Helper()
	netnstest.Require(t)
	kube := KubeBinDir(t)
	if o.Anvil == "" {
		o.Anvil = BuildAnvil(t)
	}
	if o.Network == nil {
		o.Network = netnstest.NewNetwork(t)
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	ns := o.Network.Add(t)
	root := hostfs.Root(t.TempDir())
	cp := &ControlPlane{Network: o.Network, NS: ns, Root: root, Anvil: o.Anvil, timeout: o.Timeout}

	c := &v1alpha1.Cluster{
		APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindCluster, Name: "e2e",
		ControlPlane: v1alpha1.ControlPlane{Layout: v1alpha1.LayoutProcess},
		// No kubelet or containerd on the machine that runs the tests:
		// the node stack is tested in lab machines.
		Hosts: []v1alpha1.Host{{Name: "m1", Address: ns.Addr, Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeNone}},
		Components: v1alpha1.Components{
			APIServer:         v1alpha1.Component{ExtraArgs: o.APIServerArgs},
			ControllerManager: v1alpha1.Component{ExtraArgs: o.ControllerManagerArgs},
			Scheduler:         v1alpha1.Component{ExtraArgs: o.SchedulerArgs},
		},
	}
	c.Default()
	if _, err := v1alpha1.Validate(c); err != nil {
		t.Fatal(err)
	}
	cp.Cluster = c
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cp.ClusterFile = filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(cp.ClusterFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(o.Anvil, "images", "install", "--root", string(root), "--dir", filepath.Dir(kube), "--version", images.DefaultVersion).CombinedOutput(); err != nil {
		t.Fatalf("install binaries: %v\n%s", err, out)
	}
	if !o.NoCleanup {
		t.Cleanup(func() { cp.Reset(t) })
	}
	cp.URL = c.APIServerURL()
	cp.AdminKubeconfig = root.Kubeconfig(pki.AdminKubeconfig)
	return cp
}

// NewMaster prepares another machine for a master of the same cluster: a
// namespace on the same network and a root with the binaries installed.
// Its teardown resets whatever it runs by then (before this control
// plane's, since cleanups run last-registered first).
func (cp *ControlPlane) NewMaster(t testing.TB, name string) *ControlPlane {
	t.Helper()
	kube := KubeBinDir(t)
	ns := cp.Network.Add(t)
	root := hostfs.Root(t.TempDir())
	m := &ControlPlane{Network: cp.Network, NS: ns, Root: root, Anvil: cp.Anvil, timeout: cp.timeout, CAHash: cp.CAHash}
	if out, err := exec.Command(cp.Anvil, "images", "install", "--root", string(root), "--dir", filepath.Dir(kube), "--version", images.DefaultVersion).CombinedOutput(); err != nil {
		t.Fatalf("install binaries: %v\n%s", err, out)
	}
	t.Cleanup(func() { m.Reset(t) })
	// The cluster file the join runs with names the new master, so that
	// it too runs no kubelet here.
	c := *cp.Cluster
	c.Hosts = append(slices.Clone(cp.Cluster.Hosts), v1alpha1.Host{Name: name, Address: ns.Addr, Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeNone})
	c.Default()
	if _, err := v1alpha1.Validate(&c); err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	m.Cluster, m.ClusterFile = &c, filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(m.ClusterFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	m.URL = "https://" + ns.Addr.String() + ":" + strconv.Itoa(int(cp.Cluster.ControlPlane.Port))
	m.AdminKubeconfig = root.Kubeconfig(pki.AdminKubeconfig)
	return m
}

// JoinArgs are the arguments of `anvil join --control-plane` for m to join
// through cp's apiserver, with m's cluster file (NewMaster's); the token
// and certificate key go on stdin.
func (cp *ControlPlane) JoinArgs(m *ControlPlane, name string) []string {
	return []string{"join", cp.URL, "--control-plane", "-f", m.ClusterFile, "--node", name, "--token-file", "-", "--certificate-key-file", "-",
		"--ca-cert-hash", cp.CAHash.String(), "--node-ip", m.NS.Addr.String(),
		"--layout", "process", "--root", string(m.Root), "--timeout", cp.timeout.String()}
}

// InitArgs are the arguments of the `anvil init` Init runs.
func (cp *ControlPlane) InitArgs() []string {
	return []string{"init", "-f", cp.ClusterFile, "--node", "m1", "--layout", "process",
		"--root", string(cp.Root), "--advertise-address", cp.NS.Addr.String(), "--timeout", cp.timeout.String()}
}

// Init runs `anvil init` inside the namespace and fails the test if it
// fails.
func (cp *ControlPlane) Init(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cp.timeout+time.Minute)
	defer cancel()
	start := time.Now()
	out, err := cp.Run(ctx, cp.InitArgs()...)
	cp.InitElapsed = time.Since(start)
	cp.InitOutput = out
	if err != nil {
		t.Fatalf("anvil init: %v\n%s", err, out)
	}
	if cp.CAHash, err = pki.CAHashFromFile(filepath.Join(cp.Root.PKI(), pki.CertFile(pki.CACertAndKeyBaseName))); err != nil {
		t.Fatal(err)
	}
}

// EtcdEndpoint is the member's client URL on the namespace's address.
func (cp *ControlPlane) EtcdEndpoint() string { return "https://" + cp.NS.Addr.String() + ":2379" }

// Run runs anvil inside the control plane's namespace and returns its
// combined output.
func (cp *ControlPlane) Run(ctx context.Context, args ...string) (string, error) {
	cmd := cp.NS.Command(ctx, cp.Anvil, args...)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// StopComponent stops one of the control plane's components for the rest
// of the test (the supervisor forgets it), for tests that run their own in
// its place.
func (cp *ControlPlane) StopComponent(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := layout.Options{Layout: v1alpha1.LayoutProcess, Root: cp.Root, Anvil: cp.Anvil}
	if err := layout.Stop(ctx, o, []component.Spec{{Name: name}}, false); err != nil {
		t.Fatalf("stop %s: %v", name, err)
	}
}

// Reset runs `anvil reset --force` on the control plane.
func (cp *ControlPlane) Reset(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := cp.Run(ctx, "reset", "--force", "--root", string(cp.Root))
	if err != nil {
		t.Errorf("anvil reset: %v\n%s", err, out)
	}
	return out
}

// RESTConfig is an admin client configuration.
func (cp *ControlPlane) RESTConfig(t testing.TB) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	return cfg
}

// Client is an admin clientset.
func (cp *ControlPlane) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cp.RESTConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Token makes a fresh bootstrap token, bound to no node, through `anvil
// token create`.
func (cp *ControlPlane) Token(t testing.TB, ttl time.Duration) pki.Token {
	t.Helper()
	return cp.token(t, "--ttl", ttl.String())
}

// NodeToken makes a fresh bootstrap token bound to node name through
// `anvil token create --node`.
func (cp *ControlPlane) NodeToken(t testing.TB, name string, ttl time.Duration) pki.Token {
	t.Helper()
	return cp.token(t, "--ttl", ttl.String(), "--node", name)
}

func (cp *ControlPlane) token(t testing.TB, flags ...string) pki.Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := cp.NS.Command(ctx, cp.Anvil, append([]string{"token", "create", "--root", string(cp.Root)}, flags...)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("anvil token create %s: %v\n%s", strings.Join(flags, " "), err, ee.Stderr)
		}
		t.Fatalf("anvil token create %s: %v", strings.Join(flags, " "), err)
	}
	tok, err := pki.ParseToken(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("anvil token create printed no token: %v", err)
	}
	return tok
}

// LogFile is a component's log under the process layout.
func (cp *ControlPlane) LogFile(component string) string {
	return cp.Root.Join(hostfs.LogDir, component+".log")
}

func (cp *ControlPlane) String() string {
	return fmt.Sprintf("control plane %s in %s under %s", cp.URL, cp.NS.Name, cp.Root)
}

// Status is `anvil status -o json` of this master.
func (cp *ControlPlane) Status(t testing.TB) *master.Status {
	t.Helper()
	out, err := cp.NS.Command(context.Background(), cp.Anvil, "status", "--root", string(cp.Root), "-o", "json").Output()
	var st master.Status
	if jerr := json.Unmarshal(out, &st); jerr != nil {
		t.Fatalf("anvil status: %v %v\n%s", err, jerr, out)
	}
	return &st
}

// Cluster is a small, fully defaulted cluster built in code (masters
// lab-m1, lab-m2, worker lab-w1), so unit tests do not depend on the
// cluster-file decoder. Its hosts run no pods (runtime none), as every
// cluster a test runs on the test machine itself.
func Cluster() *v1alpha1.Cluster {
	return &v1alpha1.Cluster{
		APIVersion:        v1alpha1.APIVersion,
		Kind:              v1alpha1.KindCluster,
		Name:              "lab",
		KubernetesVersion: "v1.37.2",
		ControlPlane:      v1alpha1.ControlPlane{Endpoint: "10.0.0.11", Port: 6443, Layout: v1alpha1.LayoutSystemd},
		Hosts: []v1alpha1.Host{
			{Name: "lab-m1", Address: netip.MustParseAddr("10.0.0.11"), Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeNone},
			{Name: "lab-m2", Address: netip.MustParseAddr("10.0.0.12"), Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeNone},
			{Name: "lab-w1", Address: netip.MustParseAddr("10.0.0.21"), Role: v1alpha1.RoleWorker, Runtime: v1alpha1.RuntimeNone},
		},
		Networking: v1alpha1.Networking{
			ServiceCIDR:   netip.MustParsePrefix("10.96.0.0/12"),
			PodCIDR:       netip.MustParsePrefix("10.244.0.0/16"),
			ClusterDomain: "cluster.local",
		},
		Etcd: v1alpha1.Etcd{
			QuotaBackendBytes: 8 << 30,
			SnapshotCount:     10000,
			HeartbeatInterval: v1alpha1.Duration{Duration: 100 * time.Millisecond},
			ElectionTimeout:   v1alpha1.Duration{Duration: time.Second},
		},
	}
}
