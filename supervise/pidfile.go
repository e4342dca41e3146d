package supervise

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"anvil.dev/anvil/internal/fsutil"
)

// PID files and the processes they name: a PID file records the binary as
// well as the PID, so that a recycled PID is never mistaken for ours.

// killRecorded kills the process group a PID file names, if that process
// still runs the binary the file recorded, then removes the file.
func killRecorded(pidFile string, timeout time.Duration, before func(int)) {
	pid, exe := readPIDFileWithExe(pidFile)
	if pid > 0 && exe != "" && alive(pid) && processExe(pid) == exe {
		before(pid)
		syscall.Kill(-pid, syscall.SIGTERM)
		if !waitGone(pid, timeout) {
			syscall.Kill(-pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
	}
	os.Remove(pidFile)
}

func writePID(path string, pid int, exe string) {
	fsutil.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"+exe+"\n"), 0o600, 0o700)
}

func readPIDFile(path string) (int, error) {
	pid, _ := readPIDFileWithExe(path)
	if pid == 0 {
		return 0, fmt.Errorf("no pid in %s", path)
	}
	return pid, nil
}

func readPIDFileWithExe(path string) (int, string) {
	f, err := os.Open(path)
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var pid int
	var exe string
	if sc.Scan() {
		pid, _ = strconv.Atoi(strings.TrimSpace(sc.Text()))
	}
	if sc.Scan() {
		exe = strings.TrimSpace(sc.Text())
	}
	return pid, exe
}

// processExe is the binary a live process runs, as /proc reports it.
func processExe(pid int) string {
	exe, _ := exeLink(pid)
	return strings.TrimSuffix(exe, " (deleted)")
}

// exeLink is /proc/PID/exe as the kernel writes it: " (deleted)" after
// the path of a file since removed or renamed over.
func exeLink(pid int) (string, error) {
	return os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
}

// Alive reports whether pid is a live, non-zombie process.
func Alive(pid int) bool { return alive(pid) }

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

func waitGone(pid int, timeout time.Duration) bool {
	return waitGoneCtx(context.Background(), pid, timeout)
}

func waitGoneCtx(ctx context.Context, pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !alive(pid)
}

// ExeReplaced reports whether live process pid runs another executable
// than binary names now: the file it started from was replaced (an
// upgrade renamed a new build over it, and /proc calls the old one
// "(deleted)"), or binary is a link switched to another file since. It
// is false when either cannot be read.
func ExeReplaced(pid int, binary string) bool {
	if pid <= 0 {
		return false
	}
	exe, err := exeLink(pid)
	if err != nil {
		return false
	}
	if strings.HasSuffix(exe, " (deleted)") {
		return true
	}
	cur, err := filepath.EvalSymlinks(binary)
	if err != nil {
		return false
	}
	return exe != cur
}
