package supervise

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestExeReplaced: a process started through a link is current until the
// file it runs is renamed over (an upload) or the link is switched (an
// upgrade), and either is seen.
func TestExeReplaced(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v1, v2 := write("v1"), write("v2")
	link := filepath.Join(dir, "sleep")
	if err := os.Symlink(v1, link); err != nil {
		t.Fatal(err)
	}
	run := func() int {
		cmd := exec.Command(link, "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd.Process.Pid
	}

	pid := run()
	if ExeReplaced(pid, link) {
		t.Fatal("a process running the binary its link names is judged replaced")
	}
	if ExeReplaced(0, link) || ExeReplaced(pid, filepath.Join(dir, "missing")) {
		t.Error("no process or no binary must not be judged replaced")
	}

	// A new build renamed over the file the process runs.
	tmp := write("v1.tmp")
	if err := os.Rename(tmp, v1); err != nil {
		t.Fatal(err)
	}
	if !ExeReplaced(pid, link) {
		t.Error("a process whose binary was renamed over is not judged replaced")
	}

	// The link switched to another file.
	pid = run()
	if ExeReplaced(pid, link) {
		t.Fatal("a new process is judged replaced")
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(v2, link); err != nil {
		t.Fatal(err)
	}
	if !ExeReplaced(pid, link) {
		t.Error("a process whose link was switched is not judged replaced")
	}
}
