package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/internal/benchreport"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// BenchmarkHeartbeat runs N simulated nodes — the real Agent (registration,
// Lease renewal, status, verification reads), many in this process, each
// with its own client certificate from the cluster CA and its own
// connection — against a real control plane, and measures what the issue
// asks: Lease renewal latency, the apiserver's and etcd's CPU and memory,
// and Ready conditions that went false while every agent kept running.
//
// Starts are spread over a ramp (30 ms apart), as a fleet coming up would
// be; the measured window starts once all are registered and settled.
// ANVIL_BENCH_WINDOW changes the window (default 90s, more than one
// 40 s Lease duration plus the default 50 s grace period).
func BenchmarkHeartbeat(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { benchHeartbeat(b, n) })
	}
}

func benchWindow() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("ANVIL_BENCH_WINDOW")); err == nil && d > 0 {
		return d
	}
	return 90 * time.Second
}

func benchHeartbeat(b *testing.B, n int) {
	if testing.Short() {
		b.Skip("end-to-end")
	}
	cp := mastertest.Start(b, mastertest.Options{ControllerManagerArgs: map[string]string{
		// The default pod network (10.244.0.0/16 with a /24 per node) has
		// room for 256 Nodes; a /26 per node gives every one of 1000 a CIDR.
		"node-cidr-mask-size": "26",
		// Its first pass over 1000 new Nodes (a pod CIDR and the not-ready
		// taint lifted, each a write) is paced by its client's 20 QPS: on
		// this shared machine it took 3 to over 5 minutes. Clusters of this
		// size raise it, as Kubernetes' own scale tests do.
		"kube-api-qps":   "100",
		"kube-api-burst": "200",
	}})
	cs := cp.Client(b)
	caCert, err := pki.ReadCertFile(filepath.Join(cp.Root.PKI(), "ca.crt"))
	if err != nil {
		b.Fatal(err)
	}
	caKey, err := pki.ReadKeyFile(filepath.Join(cp.Root.PKI(), "ca.key"))
	if err != nil {
		b.Fatal(err)
	}
	components := []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"}
	restarts0 := restarts(b, cp, components)

	// One gathering of this machine's facts, shared; each node reports its
	// own made-up address so the Nodes differ as real ones would.
	base, err := agent.GatherFacts(agent.FactsOptions{StoragePath: "/"})
	if err != nil {
		b.Fatal(err)
	}
	facts := func(i int) func() (agent.Facts, error) {
		f := base
		f.Addresses = []netip.Addr{netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})}
		return func() (agent.Facts, error) { return f, nil }
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	notReady := watchReady(b, ctx, cs)

	var (
		rec      latencies
		measure  atomic.Bool
		failures atomic.Int64
		wg       sync.WaitGroup
		agents   = make([]*agent.Agent, n)
	)
	onRenew := func(d time.Duration, err error) {
		if !measure.Load() {
			return
		}
		if err != nil {
			failures.Add(1)
			return
		}
		rec.add(d)
	}
	no := false
	logFile, err := os.Create(filepath.Join(b.TempDir(), "agents.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for i := range n {
		name := fmt.Sprintf("bench-%04d", i)
		creds, err := agent.MintCredentials(agent.MintOptions{NodeName: name, Server: cp.URL, CACert: caCert, CAKey: caKey})
		if err != nil {
			b.Fatal(err)
		}
		cfg := &agent.Config{NodeName: name, Servers: []string{cp.URL}, Kubeconfig: "/unused/kubeconfig", RotateCertificates: &no}
		cfg.Default()
		if err := cfg.Validate(); err != nil {
			b.Fatal(err)
		}
		a, err := agent.New(cfg, agent.Options{Credentials: &creds, Facts: facts(i), OnRenew: onRenew, Log: log})
		if err != nil {
			b.Fatal(err)
		}
		agents[i] = a
	}
	ramp := time.Now()
	for i, a := range agents {
		wg.Go(func() { a.Run(ctx) })
		if i < n-1 {
			time.Sleep(30 * time.Millisecond)
		}
	}
	waitAll := time.Now().Add(5 * time.Minute)
	for {
		registered := 0
		for _, a := range agents {
			if a.Registered() && !a.LastRenew().IsZero() {
				registered++
			}
		}
		if registered == n {
			break
		}
		if time.Now().After(waitAll) {
			b.Fatalf("only %d of %d agents registered and renewed within 5 minutes", registered, n)
		}
		time.Sleep(time.Second)
	}
	b.Logf("%d agents registered and renewing %s after the first start", n, time.Since(ramp).Round(time.Second))
	// Settle: the controller-manager's first pass over new Nodes (a pod
	// CIDR each, the not-ready taint lifted) runs at its client's 20 QPS
	// and is not the steady state.
	settled := time.Now()
	waitSettled(b, cs, n, 5*time.Minute)
	b.Logf("the controller-manager finished with the new Nodes %s later", time.Since(settled).Round(time.Second))
	time.Sleep(10 * time.Second)

	// A component that restarted while a thousand Nodes registered (a
	// leader that could not renew its lease on a starved machine) is
	// reported, with why; one that restarts in the window fails the run.
	restartsWindow := restarts(b, cp, components)
	if !maps.Equal(restartsWindow, restarts0) {
		b.Logf("control-plane restarts while the agents registered: before %v, after %v", restarts0, restartsWindow)
		logRestarted(b, cp, restarts0, restartsWindow)
	}
	window := benchWindow()
	pids := componentPIDs(b, cp, components)
	before := map[string]procSample{}
	for name, pid := range pids {
		before[name] = sampleProc(b, pid)
	}
	var self0 runtime.MemStats
	runtime.ReadMemStats(&self0)
	cpuSelf0 := sampleProc(b, os.Getpid())
	api0, etcd0 := apiserverMetrics(b, cs), etcdMetrics(b, cp)
	measure.Store(true)
	time.Sleep(window)
	measure.Store(false)
	api1, etcd1 := apiserverMetrics(b, cs), etcdMetrics(b, cp)
	after := map[string]procSample{}
	for name, pid := range componentPIDs(b, cp, components) {
		if pid != pids[name] {
			b.Errorf("%s restarted during the measured window", name)
		}
		after[name] = sampleProc(b, pid)
	}
	if r := restarts(b, cp, components); !maps.Equal(r, restartsWindow) {
		b.Errorf("control-plane restarts during the measured window: before %v, after %v", restartsWindow, r)
		logRestarted(b, cp, restartsWindow, r)
	}
	cpuSelf := sampleProc(b, os.Getpid())
	cancel()
	wg.Wait()

	p50, p99, count := rec.percentiles()
	label := func(s string) string { return fmt.Sprintf("heartbeat N=%d %s", n, s) }
	cores := func(name string) float64 { return (after[name].cpu - before[name].cpu).Seconds() / window.Seconds() }
	report := []benchreport.Figure{
		{Name: label("lease renew p50"), Value: ms(p50), Unit: "ms", Anchor: 100, Note: "target p99 ≤ 100 ms"},
		{Name: label("lease renew p99"), Value: ms(p99), Unit: "ms", Anchor: 100, Note: "target ≤ 100 ms at 1000 nodes"},
		{Name: label("false NotReady transitions"), Value: float64(notReady.count()), Unit: "nodes", Anchor: 0, Note: "target 0"},
		{Name: label("renew failures in window"), Value: float64(failures.Load()), Unit: "count", Anchor: 0, Note: "every renewal should succeed"},
		{Name: label("kube-apiserver CPU"), Value: cores("kube-apiserver"), Unit: "cores", Anchor: 1, Note: "budget: half of this 2-core machine with etcd"},
		{Name: label("etcd CPU"), Value: cores("etcd"), Unit: "cores", Anchor: 0.5, Note: "budget"},
		{Name: label("kube-controller-manager CPU"), Value: cores("kube-controller-manager"), Unit: "cores", Anchor: 0.5, Note: "budget"},
		{Name: label("kube-apiserver RSS"), Value: mib(after["kube-apiserver"].rss), Unit: "MiB", Anchor: 2048, Note: "budget"},
		{Name: label("etcd RSS"), Value: mib(after["etcd"].rss), Unit: "MiB", Anchor: 512, Note: "budget"},
		{Name: label("simulated agents CPU per node"), Value: 1000 * (cpuSelf.cpu - cpuSelf0.cpu).Seconds() / window.Seconds() / float64(n), Unit: "mcores", Anchor: 10, Note: "this process, all agents"},
		{Name: label("simulated agents RSS per node"), Value: float64(cpuSelf.rss) / float64(n) / 1024, Unit: "KiB", Anchor: 1024, Note: "this process ÷ N"},
	}
	for _, f := range report {
		benchreport.Report(b, f)
	}
	// Where the time goes, from the components' own histograms.
	for _, h := range []struct {
		what string
		a, b metricsSnapshot
		name string
		m    map[string]string
	}{
		{"apiserver PUT lease", api0, api1, "apiserver_request_duration_seconds", map[string]string{"verb": "PUT", "resource": "leases"}},
		{"apiserver APF wait (system)", api0, api1, "apiserver_flowcontrol_request_wait_duration_seconds", map[string]string{"priority_level": "system"}},
		{"apiserver→etcd update leases", api0, api1, "etcd_request_duration_seconds", map[string]string{"operation": "update", "type": "leases.coordination.k8s.io"}},
		{"etcd WAL fsync", etcd0, etcd1, "etcd_disk_wal_fsync_duration_seconds", nil},
		{"etcd backend commit", etcd0, etcd1, "etcd_disk_backend_commit_duration_seconds", nil},
	} {
		b.Logf("%-30s %s", h.what, h.b.hist(h.name, h.m).sub(h.a.hist(h.name, h.m)))
	}
	b.Logf("slow renewals (>100ms) by second of the window: %v", rec.slowBySecond(100*time.Millisecond))
	b.Logf("apiserver requests in the window: %v", counterDelta(api0, api1, "apiserver_request_total", "verb", "resource", "subresource"))
	b.Logf("apiserver GC cycles in the window: %v", counterDelta(api0, api1, "go_gc_duration_seconds"))
	logFile.Sync()
	b.Logf("agent log lines: %v", logSummary(logFile.Name()))
	// Every figure comes from the one run above, whatever b.N: make bench
	// runs benchmarks with -benchtime 1x.
	b.Logf("%d renewals measured over %s; lease renew p50 %s p99 %s; NotReady transitions: %v", count, window, p50, p99, notReady.list())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mib(b int64) float64        { return float64(b) / (1 << 20) }

// latencies collects renewal latencies from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
	at []time.Time
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
}

// slowBySecond counts renewals slower than limit in each second of the
// window that had any, to tell steady slowness from stalls.
func (l *latencies) slowBySecond(limit time.Duration) map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int]int{}
	if len(l.at) == 0 {
		return out
	}
	start := l.at[0]
	for i, d := range l.d {
		if d > limit {
			out[int(l.at[i].Sub(start).Seconds())]++
		}
	}
	return out
}

func (l *latencies) percentiles() (p50, p99 time.Duration, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), len(s)
}

// procSample is a process's CPU time so far and its resident memory.
type procSample struct {
	cpu time.Duration
	rss int64
}

func sampleProc(tb testing.TB, pid int) procSample {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3; utime and stime are 14 and 15 (clock ticks, 100 per second).
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	m, err := agent.ReadMemoryUsage(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return procSample{cpu: time.Duration(ut+stt) * 10 * time.Millisecond, rss: m.RSS}
}

// readyWatch counts Nodes whose Ready condition left True after it had
// been True: with every agent running, each one is a false NotReady.
type readyWatch struct {
	mu    sync.Mutex
	ready map[string]bool
	flips map[string]int
}

func (r *readyWatch) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.flips {
		n += c
	}
	return n
}

func (r *readyWatch) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k, c := range r.flips {
		out = append(out, fmt.Sprintf("%s×%d", k, c))
	}
	slices.Sort(out)
	return out
}

func (r *readyWatch) observe(n *corev1.Node) {
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if was, seen := r.ready[n.Name]; seen && was && !ready {
		r.flips[n.Name]++
	}
	r.ready[n.Name] = ready
}

func watchReady(tb testing.TB, ctx context.Context, cs kubernetes.Interface) *readyWatch {
	r := &readyWatch{ready: map[string]bool{}, flips: map[string]int{}}
	go func() {
		rv := ""
		for ctx.Err() == nil {
			if rv == "" {
				l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
				if err != nil {
					time.Sleep(time.Second)
					continue
				}
				for i := range l.Items {
					r.observe(&l.Items[i])
				}
				rv = l.ResourceVersion
			}
			w, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				rv = ""
				continue
			}
			for ev := range w.ResultChan() {
				switch ev.Type {
				case watch.Added, watch.Modified:
					n := ev.Object.(*corev1.Node)
					r.observe(n)
					rv = n.ResourceVersion
				case watch.Bookmark:
					if n, ok := ev.Object.(*corev1.Node); ok {
						rv = n.ResourceVersion
					}
				case watch.Error:
					rv = ""
				}
			}
		}
	}()
	return r
}

// BenchmarkAgentRSS joins one worker with `anvil join` and measures the
// real `anvil agent` process (the anvil binary, etcd and client-go linked
// in) once it has registered and settled, against the 20 MiB budget.
func BenchmarkAgentRSS(b *testing.B) {
	if testing.Short() {
		b.Skip("end-to-end")
	}
	cp := mastertest.Start(b, mastertest.Options{})
	w := newWorker(b, cp, "rss")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := w.join(ctx, cp, cp.Token(b, time.Hour), cp.CAHash.String()); err != nil {
		b.Fatalf("join: %v\n%s", err, out)
	}
	pid := w.agentPID()
	if pid == 0 {
		b.Fatal("no agent")
	}
	// Before the startup pages are released (two status intervals after
	// registration), then steady: a sample every 5 s for a minute, which
	// covers six renewals and a verification read.
	time.Sleep(5 * time.Second)
	startup, err := agent.ReadMemoryUsage(pid)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(30 * time.Second)
	var steady agent.MemoryUsage
	for range 12 {
		m, err := agent.ReadMemoryUsage(pid)
		if err != nil {
			b.Fatal(err)
		}
		if m.RSS > steady.RSS {
			steady = m
		}
		time.Sleep(5 * time.Second)
	}
	benchreport.Report(b, benchreport.Figure{Name: "agent RSS at startup (before release)", Value: mib(startup.RSS), Unit: "MiB", Anchor: 70, Note: "kubelet e2e limit 70 MiB, k3s agent ~275 MB"})
	benchreport.Report(b, benchreport.Figure{Name: "agent steady RSS (max of 12 samples)", Value: mib(steady.RSS), Unit: "MiB", Anchor: 20, Note: "target ≤ 20 MiB; kubelet e2e limit 70 MiB"})
	benchreport.Report(b, benchreport.Figure{Name: "agent steady RSS anonymous (heap, stacks)", Value: mib(steady.Anon), Unit: "MiB", Anchor: 20, Note: "part of the above"})
	benchreport.Report(b, benchreport.Figure{Name: "agent steady RSS file-backed (binary pages)", Value: mib(steady.File), Unit: "MiB", Anchor: 20, Note: "part of the above; shared page cache"})
	b.Logf("startup %+v, steady %+v, peak (VmHWM) %.1f MiB", startup, steady, mib(steady.Peak))
}

// waitSettled waits until n Nodes have a pod CIDR and no taint: what the
// controller-manager does to every new Node.
func waitSettled(tb testing.TB, cs kubernetes.Interface, n int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		cancel()
		done := 0
		if err == nil {
			for _, node := range l.Items {
				if node.Spec.PodCIDR != "" && len(node.Spec.Taints) == 1 && node.Spec.Taints[0].Key == agent.NoRuntimeTaintKey {
					done++
				}
			}
		}
		if done >= n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("only %d of %d Nodes settled (pod CIDR, only the no-runtime taint) within %s (%v)", done, n, timeout, err)
		}
		time.Sleep(2 * time.Second)
	}
}

// logSummary counts the agents' log lines by message and reason.
func logSummary(path string) map[string]int {
	b, _ := os.ReadFile(path)
	out := map[string]int{}
	for line := range strings.SplitSeq(string(b), "\n") {
		_, rest, ok := strings.Cut(line, "msg=")
		if !ok {
			continue
		}
		key := rest
		if q, err := strconv.QuotedPrefix(rest); err == nil {
			key, _ = strconv.Unquote(q)
		} else if i := strings.IndexByte(rest, ' '); i > 0 {
			key = rest[:i]
		}
		if _, r, ok := strings.Cut(line, "reason="); ok {
			if q, err := strconv.QuotedPrefix(r); err == nil {
				r, _ = strconv.Unquote(q)
			} else if i := strings.IndexByte(r, ' '); i > 0 {
				r = r[:i]
			}
			key += " (" + r + ")"
		}
		out[key]++
	}
	return out
}

// componentPIDs are the control-plane components' PIDs, waiting a little
// for one the supervisor is restarting.
func componentPIDs(tb testing.TB, cp *mastertest.ControlPlane, names []string) map[string]int {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := supervise.ReadStatus(cp.Root)
		if err != nil {
			tb.Fatal(err)
		}
		out := map[string]int{}
		missing := ""
		for _, name := range names {
			p, ok := st.Process(name)
			if !ok || p.PID == 0 {
				missing = name
				break
			}
			out[name] = p.PID
		}
		if missing == "" {
			return out
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no %s in the supervisor's status for 30s", missing)
		}
		time.Sleep(time.Second)
	}
}

// logRestarted shows the end of the log of each component that restarted
// between two counts.
func logRestarted(tb testing.TB, cp *mastertest.ControlPlane, before, after map[string]int) {
	tb.Helper()
	for name, n := range after {
		if n == before[name] {
			continue
		}
		b, _ := os.ReadFile(cp.LogFile(name))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		tb.Logf("%s restarted %d times; the end of its log:\n%s", name, n-before[name], strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
}

func restarts(tb testing.TB, cp *mastertest.ControlPlane, names []string) map[string]int {
	tb.Helper()
	st, err := supervise.ReadStatus(cp.Root)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int{}
	for _, name := range names {
		p, _ := st.Process(name)
		out[name] = p.Restarts
	}
	return out
}
