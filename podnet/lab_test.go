package podnet

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/netnstest"
)

// The tests' machines are network namespaces on a bridge of their own
// (internal/netnstest); the Nodes come from a fake clientset, the only
// fake: routes, nftables, sysctls and packets are the kernel's.

var clusterCIDR = prefixes("10.244.0.0/16")

// requireNft skips under -short (the namespace tests are end-to-end);
// else it fails under CI=true, or skips, when root, ip or nft is missing.
func requireNft(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespaces: end-to-end")
	}
	netnstest.Require(t)
	if _, err := nftPath(); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing under CI: %v", ErrNftMissing)
	}
	t.Skip(ErrNftMissing.Error())
}

type lab struct {
	net *netnstest.Network
	cs  *fake.Clientset
	// watches counts Node watches started: the fake clientset loses what
	// happens between an informer's list and its watch, so a test changes
	// Nodes only once its controllers watch.
	watches atomic.Int32
}

func newLab(t testing.TB, nodes ...*corev1.Node) *lab {
	t.Helper()
	requireNft(t)
	guardHost(t)
	l := &lab{net: netnstest.NewNetwork(t)}
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, n)
	}
	l.cs = fake.NewClientset(objs...)
	l.cs.PrependWatchReactor("nodes", func(k8stesting.Action) (bool, watch.Interface, error) {
		l.watches.Add(1)
		return false, nil, nil
	})
	return l
}

// guardHost fails the test if it changed this host's own network: the
// code under test must only ever act inside the namespaces.
func guardHost(t testing.TB) {
	t.Helper()
	state := func() string {
		fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		routes, _ := exec.Command("ip", "-o", "route", "show", "proto", anvilProto()).CombinedOutput()
		// Not the whole ruleset: other software on a shared host may
		// change it meanwhile.
		table, _ := exec.Command("nft", "list", "table", tableFamily, MasqueradeTable).CombinedOutput()
		return fmt.Sprintf("ip_forward=%s routes:\n%s\ntable:\n%s", bytes.TrimSpace(fwd), routes, table)
	}
	before := state()
	t.Cleanup(func() {
		if after := state(); after != before {
			t.Errorf("the host's network changed:\nbefore: %s\nafter: %s", before, after)
		}
	})
}

// machine is a node: a namespace on the lab's network, with a root for
// its files and its controller's log.
type machine struct {
	*netnstest.NS
	path string
	root hostfs.Root
	logs *syncBuffer
	ctl  *Controller
	// stop ends the controller and waits for Run to return.
	stop func()
}

func (l *lab) machine(t testing.TB) *machine {
	t.Helper()
	m := &machine{NS: l.net.Add(t), root: hostfs.Root(t.TempDir()), logs: &syncBuffer{}}
	m.path = "/run/netns/" + m.Name
	// No default route: a packet no test route covers stops here instead
	// of leaving through the host.
	m.ip(t, "route", "del", "default")
	// Registered after the namespace's own cleanup, so it runs first.
	t.Cleanup(func() {
		if err := Cleanup(context.Background(), CleanupOptions{Root: m.root, NetNS: m.path}); err != nil {
			t.Errorf("cleanup %s: %v", m.Name, err)
		}
	})
	return m
}

// start runs a controller for Node name on m until the test ends.
func (l *lab) start(t testing.TB, m *machine, name string, tune func(*Config)) *Controller {
	t.Helper()
	cfg := Config{
		NodeName:        name,
		Interface:       "eth0",
		ClusterPodCIDRs: clusterCIDR,
		Client:          l.cs,
		Root:            m.root,
		NetNS:           m.path,
		Log:             slog.New(slog.NewTextHandler(m.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		retryBase:       50 * time.Millisecond,
		retryMax:        time.Second,
	}
	if tune != nil {
		tune(&cfg)
	}
	ctl, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.ctl = ctl
	before := l.watches.Load()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	m.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run on %s: %v", m.Name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run on %s did not return after its context ended", m.Name)
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", m.Name, m.logs.String())
		}
	})
	t.Cleanup(m.stop)
	eventually(t, 10*time.Second, func() error {
		if l.watches.Load() == before {
			return fmt.Errorf("controller of %s does not watch Nodes yet", name)
		}
		return nil
	})
	return ctl
}

func (l *lab) create(t testing.TB, n *corev1.Node) {
	t.Helper()
	if _, err := l.cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) update(t testing.TB, name string, change func(*corev1.Node)) {
	t.Helper()
	n, err := l.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	change(n)
	if _, err := l.cs.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) delete(t testing.TB, name string) {
	t.Helper()
	if err := l.cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// ip runs the ip command in the namespace.
func (m *machine) ip(t testing.TB, args ...string) string {
	t.Helper()
	return m.run(t, "ip", args...)
}

func (m *machine) run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := m.Command(context.Background(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v: %s", name, strings.Join(args, " "), m.Name, err, out)
	}
	return string(out)
}

// routes are the namespace's routes of a protocol, as iproute2 shows
// them (not as the code under test reads them): destination → next hop.
func (m *machine) routes(t testing.TB, proto string) map[string]string {
	t.Helper()
	out := map[string]string{}
	listing := m.ip(t, "-o", "-4", "route", "show", "proto", proto) + m.ip(t, "-o", "-6", "route", "show", "proto", proto)
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "via" {
			out[f[0]] = f[2]
		} else if len(f) > 0 {
			out[f[0]] = ""
		}
	}
	return out
}

func anvilProto() string { return fmt.Sprint(int(RouteProtocol)) }

func eventually(t testing.TB, limit time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", limit, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// addr is the i-th address of the lab's subnet (no namespace behind it
// unless a machine has it).
func (l *lab) addr(i byte) netip.Addr {
	a := l.net.Prefix.Addr().As4()
	a[3] = i
	return netip.AddrFrom4(a)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shell runs a command line in the namespace (for what ip alone cannot).
func (m *machine) shell(t testing.TB, script string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", m.Name, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", script, m.Name, err, out)
	}
	return string(out)
}
