package supervise

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/sdnotify"
)

// The test binary doubles as a notify-speaking child: with this variable set
// it says READY=1 on NOTIFY_SOCKET and waits for SIGTERM.
const childEnv = "ANVIL_SUPERVISOR_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "notify" {
		time.Sleep(200 * time.Millisecond)
		sdnotify.Ready("test child")
		ch := make(chan os.Signal, 1)
		signalNotify(ch)
		<-ch
		os.WriteFile(os.Getenv("ORDER_FILE")+".notify", []byte("stopped"), 0o600)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writeSpecs(t *testing.T, root hostfs.Root, specs ...component.Process) {
	t.Helper()
	dir := root.Path(component.ProcessSpecDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		if s.LogFile == "" {
			s.LogFile = root.Join(hostfs.LogDir, s.Name+".log")
		}
		if s.Dir == "" {
			s.Dir = "/"
		}
		b, _ := json.Marshal(s)
		if err := os.WriteFile(filepath.Join(dir, s.Name+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func shell(name, script string, requires ...string) component.Process {
	return component.Process{
		Name: name, Path: "/bin/sh", Args: []string{"-c", script}, Requires: requires,
		Restart: component.RestartPolicy{Delay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond},
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestSupervisor(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	order := filepath.Join(string(root), "order")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	loop := func(name string) string {
		return "trap 'echo " + name + " >> " + order + "; exit 0' TERM; while :; do sleep 0.05; done"
	}
	writeSpecs(t, root,
		component.Process{Name: "etcd", Path: self, Notify: true, Env: []string{childEnv + "=notify", "ORDER_FILE=" + order},
			Restart: component.RestartPolicy{Delay: 50 * time.Millisecond}},
		shell("apiserver", loop("apiserver"), "etcd"),
		shell("crasher", "echo boom; exit 3", "etcd"),
		shell("scheduler", loop("scheduler"), "apiserver"),
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Root: root, StopTimeout: 5 * time.Second}) }()
	stopped := false
	stop := func() error {
		cancel()
		if stopped {
			return nil
		}
		stopped = true
		return <-done
	}
	t.Cleanup(func() { stop() })

	status := func() map[string]ProcStatus {
		st, err := ReadStatus(root)
		if err != nil {
			return nil
		}
		out := map[string]ProcStatus{}
		for _, p := range st.Processes {
			out[p.Name] = p
		}
		return out
	}
	waitFor(t, "every process running and ready", 10*time.Second, func() bool {
		s := status()
		return s["etcd"].Ready && s["apiserver"].State == ProcRunning && s["scheduler"].State == ProcRunning
	})
	// Dependents start only once what they require is ready: etcd becomes
	// ready 200ms after it starts, by READY=1.
	s := status()
	if !s["apiserver"].StartedAt.After(s["etcd"].StartedAt.Add(150 * time.Millisecond)) {
		t.Errorf("apiserver started at %v, before etcd (started %v) was ready", s["apiserver"].StartedAt, s["etcd"].StartedAt)
	}
	// The crash-looping process keeps being restarted, with its exit recorded.
	waitFor(t, "restarts of the crashing process", 10*time.Second, func() bool { return status()["crasher"].Restarts >= 3 })
	if got := status()["crasher"].LastExit; got != "exited with status 3" {
		t.Errorf("last exit %q", got)
	}
	logb, _ := os.ReadFile(root.Join(hostfs.LogDir, "crasher.log"))
	if !strings.Contains(string(logb), "boom") {
		t.Errorf("crasher's output not in its log: %q", logb)
	}
	// A second supervisor on the same root is refused.
	if err := Run(context.Background(), Options{Root: root}); err == nil || !strings.Contains(err.Error(), "already runs") {
		t.Errorf("second supervisor: %v", err)
	}
	// A killed process is restarted.
	pid := status()["apiserver"].PID
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "apiserver restarted", 10*time.Second, func() bool {
		p := status()["apiserver"]
		return p.PID != 0 && p.PID != pid && p.Restarts >= 1
	})

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(order)
	if got := strings.Fields(string(b)); strings.Join(got, ",") != "scheduler,apiserver" {
		t.Errorf("stop order %v, want scheduler then apiserver (reverse of start)", got)
	}
	if _, err := os.Stat(order + ".notify"); err != nil {
		t.Errorf("etcd stand-in was not stopped cleanly: %v", err)
	}
	if _, err := ReadStatus(root); err == nil {
		t.Error("status still readable after the supervisor stopped")
	}
}

func TestSupervisorKillsStaleProcesses(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	writeSpecs(t, root, shell("apiserver", "exec sleep 1000"))
	dir := root.Path(Dir)
	os.MkdirAll(dir, 0o700)

	// A process a crashed supervisor left behind.
	stale := exec.Command("sleep", "1000")
	stale.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stale.Start(); err != nil {
		t.Fatal(err)
	}
	staleDone := make(chan struct{})
	go func() { stale.Wait(); close(staleDone) }()
	t.Cleanup(func() { stale.Process.Kill() })
	writePID(filepath.Join(dir, "apiserver.pid"), stale.Process.Pid, processExe(stale.Process.Pid))

	// A PID file whose PID now belongs to another program must not be hit.
	other := exec.Command("sleep", "1000")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	writePID(filepath.Join(dir, "ghost.pid"), other.Process.Pid, "/usr/bin/some-other-binary")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Root: root, StopTimeout: 2 * time.Second}) }()
	select {
	case <-staleDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the stale process was not killed")
	}
	cancel()
	<-done
	// StopSupervisor with no supervisor cleans PID files but spares the
	// unrelated process.
	if err := Stop(context.Background(), root, time.Second); err != nil {
		t.Fatal(err)
	}
	if !alive(other.Process.Pid) {
		t.Fatal("a process whose PID was recycled was killed")
	}
}

func TestOrderByRequires(t *testing.T) {
	specs := map[string]component.Process{
		"kube-scheduler":          {Name: "kube-scheduler", Requires: []string{"kube-apiserver"}},
		"kube-controller-manager": {Name: "kube-controller-manager", Requires: []string{"kube-apiserver"}},
		"kube-apiserver":          {Name: "kube-apiserver", Requires: []string{"etcd"}},
		"etcd":                    {Name: "etcd"},
	}
	got, err := orderByRequires(specs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	if want := "etcd,kube-apiserver,kube-controller-manager,kube-scheduler"; strings.Join(names, ",") != want {
		t.Errorf("order %v, want %s", names, want)
	}
	specs["etcd"] = component.Process{Name: "etcd", Requires: []string{"kube-scheduler"}}
	if _, err := orderByRequires(specs); err == nil {
		t.Error("a cycle was accepted")
	}
}

func signalNotify(ch chan os.Signal) { signal.Notify(ch, syscall.SIGTERM) }

func TestSupervisorReload(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	writeSpecs(t, root, shell("a", "exec sleep 1000"), shell("b", "exec sleep 1000"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Root: root, StopTimeout: 2 * time.Second}) }()
	defer func() { cancel(); <-done }()
	pids := func() map[string]int {
		st, err := ReadStatus(root)
		if err != nil {
			return nil
		}
		out := map[string]int{}
		for _, p := range st.Processes {
			if p.State == ProcRunning {
				out[p.Name] = p.PID
			}
		}
		return out
	}
	waitFor(t, "a and b running", 10*time.Second, func() bool { return len(pids()) == 2 })
	before := pids()

	// b removed, a unchanged, c added.
	os.Remove(filepath.Join(root.Path(component.ProcessSpecDir), "b.json"))
	writeSpecs(t, root, shell("c", "exec sleep 1000", "a"))
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "b gone and c running", 10*time.Second, func() bool {
		p := pids()
		_, hasB := p["b"]
		return !hasB && p["c"] != 0
	})
	if pids()["a"] != before["a"] {
		t.Error("an unchanged process was restarted by a reload")
	}
	if alive(before["b"]) {
		t.Error("the removed process still runs")
	}
}
