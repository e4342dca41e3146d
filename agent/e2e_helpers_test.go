package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/netnstest"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// worker is a machine the test joined: a namespace on the control plane's
// bridge and a root its supervisor and agent run under.
type worker struct {
	Name string
	NS   *netnstest.NS
	Root hostfs.Root
}

// newWorker adds a namespace and a root, and stops whatever the worker's
// supervisor runs when the test ends (before the namespace goes).
func newWorker(t testing.TB, cp *mastertest.ControlPlane, name string) *worker {
	t.Helper()
	w := &worker{Name: name, NS: cp.Network.Add(t), Root: hostfs.Root(t.TempDir())}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := supervise.Stop(ctx, w.Root, 30*time.Second); err != nil {
			t.Logf("stop the supervisor of %s: %v", name, err)
		}
	})
	return w
}

// join runs `anvil join --runtime none` in the worker's namespace with
// the token on stdin (the agent keeps its own Node); it returns the
// combined output and the error.
func (w *worker) join(ctx context.Context, cp *mastertest.ControlPlane, tok pki.Token, hash string, extra ...string) (string, error) {
	return w.joinArgs(ctx, cp, tok, hash, append([]string{"--runtime", "none"}, extra...)...)
}

// joinArgs runs `anvil join` in the worker's namespace with the token on
// stdin and only the flags every join has, then extra (--runtime among
// them).
func (w *worker) joinArgs(ctx context.Context, cp *mastertest.ControlPlane, tok pki.Token, hash string, extra ...string) (string, error) {
	args := append([]string{"join", cp.URL, "--token-file", "-", "--ca-cert-hash", hash,
		"--node-name", w.Name, "--layout", "process", "--root", string(w.Root), "--timeout", "90s"}, extra...)
	cmd := w.NS.Command(ctx, cp.Anvil, args...)
	cmd.Stdin = strings.NewReader(tok.Reveal() + "\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// agentPID is the agent's PID from the worker's supervisor, 0 if none.
func (w *worker) agentPID() int {
	st, err := supervise.ReadStatus(w.Root)
	if err != nil {
		return 0
	}
	p, ok := st.Process(agent.Name)
	if !ok {
		return 0
	}
	return p.PID
}

func (w *worker) supervisorPID() int {
	st, err := supervise.ReadStatus(w.Root)
	if err != nil {
		return 0
	}
	return st.PID
}

// dial connects from inside the worker's namespace: to its loopback, where
// the agent serves /healthz and /metrics.
func (w *worker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread enters the namespace for the dial and goes back
		// before it is unlocked. It must go back: a thread left in the
		// namespace may be the main one, which names the namespace of the
		// whole test process, and the namespace's teardown kills every
		// process in it.
		runtime.LockOSThread()
		here, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer here.Close()
		there, err := os.Open("/var/run/netns/" + w.NS.Name)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer there.Close()
		if err := unix.Setns(int(there.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter namespace %s: %w", w.NS.Name, err)}
			return
		}
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		// The socket stays in the namespace it was made in.
		if unix.Setns(int(here.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with this goroutine
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// get fetches url from inside the worker's namespace.
func (w *worker) get(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: w.dial, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

func (w *worker) agentLog() string {
	b, _ := os.ReadFile(w.Root.Join(hostfs.LogDir, agent.Name+".log"))
	return string(b)
}

// waitFor polls cond every 250 ms until it holds or timeout passes; the
// failure message is cond's last description.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < timeout {
		ok, desc := cond()
		if ok {
			return time.Since(start)
		}
		last = desc
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (last: %s)", what, timeout, last)
	return 0
}

func readyCondition(n *corev1.Node) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c
		}
	}
	return corev1.NodeCondition{}
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// nodeState describes a Node for failure messages.
func nodeState(cs kubernetes.Interface, name string) (*corev1.Node, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err.Error()
	}
	c := readyCondition(n)
	var taints []string
	for _, t := range n.Spec.Taints {
		taints = append(taints, t.Key+":"+string(t.Effect))
	}
	return n, fmt.Sprintf("Ready=%s (%s) taints=%v", c.Status, c.Reason, taints)
}

// The agent creates its Lease with its first renewal, which may come a
// moment after join has seen the Node Ready: a Lease not found yet is
// asked for again, for up to 15 s.
func lease(cs kubernetes.Interface, name string) (*coordinationv1.Lease, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) || ctx.Err() != nil {
			return l, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// grepTree reports the files under dir that contain needle.
func grepTree(t *testing.T, dir, needle string) []string {
	t.Helper()
	var hits []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), needle) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}

// procLeaks reports which of the PIDs has needle in its command line or
// environment.
func procLeaks(pids []int, needle string) []string {
	var out []string
	for _, pid := range pids {
		for _, f := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err == nil && strings.Contains(string(b), needle) {
				out = append(out, fmt.Sprintf("pid %d %s", pid, f))
			}
		}
	}
	return out
}

// killPID sends sig to a process this test started.
func killPID(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("no process to signal")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("signal %d: %v", pid, err)
	}
}

// requireE2E skips (or under CI=true fails) without what e2e tests need.
func requireE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end")
	}
	netnstest.Require(t)
}
