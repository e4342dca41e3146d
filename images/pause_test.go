package images

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPauseReapsAndExits builds the pause program from source and checks
// what the sandbox needs of it.
func TestPauseReapsAndExits(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the pause program")
	}
	bin := filepath.Join(t.TempDir(), "pause")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=9.9.9", "-o", bin, "./pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./pause: %v\n%s", err, out)
	}
	checkPause(t, bin, "9.9.9")
}

// checkPause runs bin as pause does in a pod: children handed to it are
// reaped (none is left a zombie), and SIGTERM or SIGINT ends it with 0.
func checkPause(t *testing.T, bin, version string) {
	t.Helper()
	if out, err := exec.Command(bin, "-v").CombinedOutput(); err != nil || !strings.Contains(string(out), version) {
		t.Errorf("pause -v: %q %v", out, err)
	}
	// The shell forks the children and then becomes pause (exec keeps its
	// PID), so they are pause's; when they exit, only pause can reap them.
	for _, c := range []struct {
		name     string
		children int
		sig      syscall.Signal
	}{
		{"one child, SIGTERM", 1, syscall.SIGTERM},
		{"three children exiting together, SIGINT", 3, syscall.SIGINT},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd, pids := startWithChildren(t, c.children, bin)
			waitHandles(t, cmd.Process.Pid, c.sig)
			for _, pid := range pids {
				waitGone(t, pid)
			}
			cmd.Process.Signal(c.sig)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("pause on %v: %v, want exit 0", c.sig, err)
			}
		})
	}
	// The control: a parent that does not reap leaves a zombie, so the
	// check above can tell.
	cmd, pids := startWithChildren(t, 1, "sleep 5")
	time.Sleep(600 * time.Millisecond)
	if state(pids[0]) != "Z" {
		t.Errorf("control: the unreaped child is %q, want a zombie", state(pids[0]))
	}
	cmd.Process.Kill()
	cmd.Wait()
}

// startWithChildren runs n `sleep 0.3 &` in a shell that then execs prog,
// and returns the children's PIDs.
func startWithChildren(t *testing.T, n int, prog string) (*exec.Cmd, []int) {
	t.Helper()
	script := strings.Repeat("sleep 0.3 & echo $!; ", n) + "exec " + prog
	cmd := exec.Command("sh", "-c", script)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	r := bufio.NewReader(stdout)
	var pids []int
	for range n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read the children's PIDs: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return cmd, pids
}

// waitHandles waits until pid catches sig (its handler is installed), so a
// signal sent then reaches pause, not the shell it replaced.
func waitHandles(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "SigCgt:"); ok {
				mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if mask&(1<<(uint(sig)-1)) != 0 && strings.Contains(string(b), "Name:\tpause") {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pause (%d) never caught %v", pid, sig)
}

// waitGone waits until pid no longer exists: reaped, not a zombie.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if state(pid) == "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("child %d was not reaped: state %q", pid, state(pid))
}

// state is pid's state letter from /proc (Z for a zombie), or "" when the
// process is gone.
func state(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}
