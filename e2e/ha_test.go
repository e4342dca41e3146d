// Package e2e_test holds the whole-product tests: a lab cluster provisioned
// by `anvil cluster apply` over SSH (real systemd, real sshd, the real
// control plane), then hurt the ways bare-metal clusters get hurt.
package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/connrotation"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
)

// haCluster is a lab of three masters behind a VIP and one worker, made by
// `anvil cluster apply`.
type haCluster struct {
	lab        *labtest.Lab
	anvil      string
	file       string
	kubeconfig string
	cs         kubernetes.Interface
	// conns dials cs's connections; closing them after a failed request
	// is what the kubelet and anvil's agent do, so that a connection to a
	// master that went away is not waited on through TCP's backoff.
	conns   *connrotation.Dialer
	masters []string
	worker  string
}

// startHA brings the lab up and applies the cluster file with
// controlPlane.vip set.
func startHA(t testing.TB) *haCluster {
	t.Helper()
	labtest.Require(t)
	bin := mastertest.BuildAnvil(t)
	kube := filepath.Dir(mastertest.KubeBinDir(t))
	l := labtest.Start(t, labtest.Options{Masters: 3, Workers: 1})
	c, _, err := v1alpha1.Load(l.ClusterFile)
	if err != nil {
		t.Fatal(err)
	}
	// A lab of several masters is HA as `anvil lab up` writes it: its free
	// VIP is the cluster's VIP and endpoint.
	if c.ControlPlane.VIP != l.Status.VIP || c.ControlPlane.Endpoint != l.Status.VIP.String() {
		t.Fatalf("the lab's cluster file has VIP %v and endpoint %q, want its free VIP %v as both", c.ControlPlane.VIP, c.ControlPlane.Endpoint, l.Status.VIP)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h := &haCluster{lab: l, anvil: bin, file: filepath.Join(dir, "cluster.yaml"), kubeconfig: filepath.Join(dir, "admin.kubeconfig")}
	if err := os.WriteFile(h.file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, m := range l.Masters() {
		h.masters = append(h.masters, m.Name)
	}
	h.worker = l.Workers()[0].Name

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, "cluster", "apply", "-f", h.file, "--anvil-binary", bin,
		"--kube-dir", kube, "--kubeconfig", h.kubeconfig, "--timeout", "5m")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("anvil cluster apply: %v\n%s", err, out)
	}
	t.Logf("3 masters + 1 worker applied in %s", time.Since(start).Round(time.Second))
	cfg, err := clientcmd.BuildConfigFromFlags("", h.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg.Host, l.Status.VIP.String()) {
		t.Fatalf("the kubeconfig apply wrote points at %s, not the VIP %s", cfg.Host, l.Status.VIP)
	}
	cfg.Timeout = 2 * time.Second
	cfg.QPS, cfg.Burst = 200, 400
	h.conns = connrotation.NewDialer((&net.Dialer{Timeout: 2 * time.Second}).DialContext)
	cfg.Dial = h.conns.DialContext
	if h.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return h
}

// onMaster runs an anvil command on the first running master of those
// given and returns its combined output.
func (h *haCluster) onMaster(t testing.TB, hosts []string, args string) (string, error) {
	t.Helper()
	var lastErr error
	for _, host := range hosts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := sshx.Dial(ctx, h.lab.SSHConfig(t, host, ""))
		if err != nil {
			cancel()
			lastErr = err
			continue
		}
		var out strings.Builder
		err = c.Run(ctx, "/usr/local/bin/anvil "+args, nil, &out, &out)
		c.Close()
		cancel()
		return out.String(), err
	}
	return "", lastErr
}

// vipHolder names the master holding the VIP's Lease ("unknown" when it
// cannot be read).
func (h *haCluster) vipHolder(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := h.cs.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, master.VIPLease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		t.Logf("the VIP's Lease: %v", err)
		return "unknown"
	}
	return *l.Spec.HolderIdentity
}

// agentRSS is the resident memory of the node agent on host, as systemd
// runs it there (VmRSS of the unit's main process, in bytes).
func (h *haCluster) agentRSS(t testing.TB, host string) (int64, error) {
	t.Helper()
	out := h.lab.Run(t, host, `pid=$(systemctl show -p MainPID --value anvil-agent.service) && awk '/^VmRSS:/ {print $2}' /proc/$pid/status`)
	kib, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("anvil-agent's VmRSS on %s: %q", host, out)
	}
	return kib << 10, nil
}

// members is `anvil etcd members` as seen from one of hosts.
func (h *haCluster) members(t testing.TB, hosts ...string) ([]etcd.Member, error) {
	t.Helper()
	out, err := h.onMaster(t, hosts, "etcd members -o json")
	if err != nil {
		return nil, fmt.Errorf("anvil etcd members: %v: %s", err, out)
	}
	var ms []etcd.Member
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		return nil, fmt.Errorf("anvil etcd members -o json: %v: %s", err, out)
	}
	return ms, nil
}

// etcdLeader is the name of the member that leads etcd now.
func (h *haCluster) etcdLeader(t testing.TB) string {
	t.Helper()
	ms, err := h.members(t, h.masters...)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Leader {
			return m.Name
		}
	}
	t.Fatalf("no etcd leader among %+v", ms)
	return ""
}

// waitHealthy waits until all three members answer and vote.
func (h *haCluster) waitHealthy(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		ms, err := h.members(t, h.masters...)
		if err == nil {
			healthy := 0
			for _, m := range ms {
				if m.Healthy && !m.Learner {
					healthy++
				}
			}
			if healthy == 3 && len(ms) == 3 {
				return time.Since(start)
			}
			last = fmt.Sprintf("%+v", ms)
		} else {
			last = err.Error()
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("etcd did not get back to 3 healthy members in %s: %s", timeout, last)
	return 0
}

// waitConsistent waits until `anvil etcd check` finds every member's hash
// equal at one revision.
func (h *haCluster) waitConsistent(t testing.TB, timeout time.Duration) (time.Duration, etcd.ConsistencyReport) {
	t.Helper()
	start := time.Now()
	var rep etcd.ConsistencyReport
	var last string
	for time.Since(start) < timeout {
		out, err := h.onMaster(t, h.masters, "etcd check -o json")
		if json.Unmarshal([]byte(out), &rep) == nil && err == nil && rep.Consistent && len(rep.Members) == 3 {
			return time.Since(start), rep
		}
		last = out
		time.Sleep(time.Second)
	}
	t.Fatalf("etcd members did not agree within %s: %s", timeout, last)
	return 0, rep
}

// writer creates ConfigMaps through the VIP, one after another, for as long
// as it runs, and remembers which ones the apiserver acknowledged and when.
type writer struct {
	cs kubernetes.Interface
	// dropConns runs after a failed request, as a client that reconnects
	// on failure does.
	dropConns func()

	mu     sync.Mutex
	acked  []string
	ackAt  []time.Time
	failed int
	// errs are the failures, with their times, for the log of a fault
	// that took too long.
	errs []failedWrite

	cancel context.CancelFunc
	done   chan struct{}
}

// maxWrites bounds the writer however long a test runs.
const maxWrites = 50000

func startWriter(t testing.TB, cs kubernetes.Interface, dropConns func()) *writer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cs: cs, dropConns: dropConns, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; i < maxWrites && ctx.Err() == nil; i++ {
			name := fmt.Sprintf("w-%06d", i)
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"anvil.dev/e2e": "writer"}}, Data: map[string]string{"i": name}}
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := cs.CoreV1().ConfigMaps("default").Create(rctx, cm, metav1.CreateOptions{})
			rcancel()
			w.mu.Lock()
			if err == nil {
				w.acked = append(w.acked, name)
				w.ackAt = append(w.ackAt, time.Now())
			} else {
				w.failed++
				w.errs = append(w.errs, failedWrite{time.Now(), err})
			}
			w.mu.Unlock()
			if err != nil && w.dropConns != nil {
				w.dropConns()
			}
			pause := 20 * time.Millisecond
			if err != nil {
				pause = 200 * time.Millisecond
			}
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *writer) stop() {
	w.cancel()
	<-w.done
}

// longestGap is the longest time without an acknowledged write between
// from and to: how long writes were unavailable around a fault.
func (w *writer) longestGap(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	prev := from
	var gap time.Duration
	for _, at := range w.ackAt {
		if at.Before(from) {
			continue
		}
		if at.After(to) {
			break
		}
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return max(gap, to.Sub(prev))
}

type failedWrite struct {
	at  time.Time
	err error
}

// errorsBetween lists the failed writes between from and to, one a line.
func (w *writer) errorsBetween(from, to time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, f := range w.errs {
		if !f.at.Before(from) && !f.at.After(to) {
			fmt.Fprintf(&b, "\n  %s %v", f.at.Format("15:04:05.000"), f.err)
		}
	}
	return b.String()
}

// ackedSince counts the writes acknowledged after at.
func (w *writer) ackedSince(at time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.ackAt {
		if a.After(at) {
			n++
		}
	}
	return n
}

// waitWrites waits until n writes have been acknowledged after at, and
// returns how long after at that happened.
func (w *writer) waitWrites(t testing.TB, at time.Time, n int, timeout time.Duration) time.Duration {
	t.Helper()
	for time.Since(at) < timeout {
		if w.ackedSince(at) >= n {
			return time.Since(at)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %d acknowledged writes within %s of %s", n, timeout, at.Format(time.TimeOnly))
	return 0
}

// checkAcked verifies that every acknowledged write is in the cluster.
func (w *writer) checkAcked(t testing.TB) int {
	t.Helper()
	w.mu.Lock()
	acked := slices.Clone(w.acked)
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []string
	var err error
	for range 10 {
		var list *corev1.ConfigMapList
		list, err = w.cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{LabelSelector: "anvil.dev/e2e=writer"})
		if err == nil {
			for _, cm := range list.Items {
				got = append(got, cm.Name)
			}
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		t.Fatalf("list the writer's ConfigMaps: %v", err)
	}
	slices.Sort(got)
	var lost []string
	for _, name := range acked {
		if _, ok := slices.BinarySearch(got, name); !ok {
			lost = append(lost, name)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged writes are gone: %v", len(lost), lost[:min(len(lost), 10)])
	}
	return len(acked)
}

// nodeWatch polls the worker's Node and remembers whether it was ever seen
// NotReady.
type nodeWatch struct {
	mu       sync.Mutex
	notReady []string
	cancel   context.CancelFunc
	done     chan struct{}
}

func watchNode(t testing.TB, cs kubernetes.Interface, name string) *nodeWatch {
	ctx, cancel := context.WithCancel(context.Background())
	nw := &nodeWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(nw.done)
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			n, err := cs.CoreV1().Nodes().Get(rctx, name, metav1.GetOptions{})
			rcancel()
			if err == nil {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
						nw.mu.Lock()
						nw.notReady = append(nw.notReady, fmt.Sprintf("%s %s: %s", time.Now().Format(time.TimeOnly), c.Status, c.Message))
						nw.mu.Unlock()
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(nw.stop)
	return nw
}

func (nw *nodeWatch) stop() {
	nw.cancel()
	<-nw.done
}

func (nw *nodeWatch) seen() []string {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return slices.Clone(nw.notReady)
}

// TestHAFaultsE2E is issue 9's fault list on a lab cluster of 3 masters
// behind a VIP and 1 worker, with a writer running throughout.
func TestHAFaultsE2E(t *testing.T) {
	h := startHA(t)
	w := startWriter(t, h.cs, h.conns.CloseAll)
	nw := watchNode(t, h.cs, h.worker)
	w.waitWrites(t, time.Now(), 20, time.Minute)
	if rss, err := h.agentRSS(t, h.worker); err != nil {
		t.Error(err)
	} else {
		t.Logf("the worker's anvil-agent (systemd): %.1f MiB resident", float64(rss)/(1<<20))
	}

	t.Run("etcd leader's master stopped", func(t *testing.T) {
		leader := h.etcdLeader(t)
		vip := h.vipHolder(t)
		t0 := time.Now()
		h.lab.Stop(t, leader, true)
		recovered := w.waitWrites(t, t0, 20, time.Minute)
		gap := w.longestGap(t0, time.Now())
		t.Logf("stopped %s (etcd leader; VIP held by %s): writes through the VIP back after %s (longest gap %s)", leader, vip, recovered.Round(100*time.Millisecond), gap.Round(100*time.Millisecond))
		if gap > 10*time.Second {
			t.Errorf("writes through the VIP were unavailable for %s (want < 10 s); failed writes:%s", gap, w.errorsBetween(t0, time.Now()))
		}
		h.lab.Start(t, leader)
		t.Logf("%s back: 3 healthy members %s after its boot", leader, h.waitHealthy(t, 3*time.Minute).Round(time.Second))
		if s := nw.seen(); len(s) > 0 {
			t.Errorf("the worker's Node went NotReady: %v", s)
		}
	})

	t.Run("a master cut off for 30 s, then healed", func(t *testing.T) {
		leader := h.etcdLeader(t)
		vip := h.vipHolder(t)
		t0 := time.Now()
		h.lab.Cut(t, leader)
		time.Sleep(30 * time.Second)
		cutEnd := time.Now()
		gap := w.longestGap(t0, cutEnd)
		n := w.ackedSince(t0)
		h.lab.Heal(t, leader)
		t.Logf("cut %s (etcd leader; VIP held by %s) for 30 s: %d writes acknowledged meanwhile, longest gap %s", leader, vip, n, gap.Round(100*time.Millisecond))
		if gap > 10*time.Second {
			t.Errorf("the majority did not keep serving: no write for %s; failed writes:%s", gap, w.errorsBetween(t0, cutEnd))
		}
		healed := time.Now()
		h.waitHealthy(t, 2*time.Minute)
		_, rep := h.waitConsistent(t, 2*time.Minute)
		t.Logf("after healing, all members agree (HashKV %08x at revision %d) %s later", rep.Members[0].Hash, rep.Revision, time.Since(healed).Round(time.Second))
		if s := nw.seen(); len(s) > 0 {
			t.Errorf("the worker's Node went NotReady: %v", s)
		}
	})

	t.Run("the VIP's master stopped: the workstation's kubeconfig still lists the Nodes", func(t *testing.T) {
		holder := h.vipHolder(t)
		if !slices.Contains(h.masters, holder) {
			t.Fatalf("the VIP is held by %q, not a master of %v", holder, h.masters)
		}
		t0 := time.Now()
		h.lab.Stop(t, holder, true)
		var last error
		ok := false
		for time.Since(t0) < time.Minute && !ok {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			var list *corev1.NodeList
			list, last = h.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			cancel()
			ok = last == nil && len(list.Items) == len(h.masters)+1
			if !ok {
				time.Sleep(200 * time.Millisecond)
			}
		}
		if !ok {
			t.Errorf("with %s (the VIP's holder) stopped, the workstation's kubeconfig lists no Nodes after a minute: %v", holder, last)
		} else {
			t.Logf("%s (the VIP's holder) stopped: Nodes listed through the VIP again %s later, now held by %s", holder, time.Since(t0).Round(100*time.Millisecond), h.vipHolder(t))
		}
		h.lab.Start(t, holder)
		h.waitHealthy(t, 3*time.Minute)
	})

	t.Run("two of three masters stopped", func(t *testing.T) {
		alive := h.masters[0]
		down := h.masters[1:]
		for _, m := range down {
			h.lab.Stop(t, m, true)
		}
		out, err := h.onMaster(t, []string{alive}, "etcd remove "+down[0])
		if err == nil {
			t.Errorf("anvil etcd remove with quorum lost succeeded:\n%s", out)
		} else if !strings.Contains(out, "quorum") {
			t.Errorf("anvil etcd remove refused without saying why (quorum):\n%s", out)
		}
		t0 := time.Now()
		for _, m := range down {
			h.lab.Start(t, m)
		}
		back := w.waitWrites(t, t0, 20, 3*time.Minute)
		t.Logf("both masters booted again: writes resumed %s after the first boot began", back.Round(time.Second))
		h.waitHealthy(t, 3*time.Minute)
	})

	w.stop()
	nw.stop()
	n := w.checkAcked(t)
	t.Logf("%d writes acknowledged, %d failed, none lost", n, w.failed)
}
