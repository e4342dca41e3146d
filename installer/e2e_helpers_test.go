package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/master/mastertest"
)

// The end-to-end tests run the installer in process against lab machines
// (real systemd, real sshd), with an anvil binary built from this tree as
// the one uploaded.

// buildAnvil is the anvil binary the tests upload: $ANVIL_TEST_BINARY
// when set (make test sets it to the bin/anvil it built), else one built
// from this tree into a temporary directory.
func buildAnvil(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(mastertest.BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v", mastertest.BinaryEnv, err)
		}
		return p
	}
	bin := filepath.Join(t.TempDir(), "anvil")
	start := time.Now()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X anvil.dev/anvil/internal/buildinfo.version=v0.0.0-e2e", "-o", bin, "anvil.dev/anvil/cmd/anvil")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build anvil: %v\n%s", err, out)
	}
	t.Logf("built anvil in %s", time.Since(start).Round(time.Second))
	return bin
}

// anvilVersion is what `anvil version` of bin says it is.
func anvilVersion(t testing.TB, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Version == "" {
		t.Fatalf("%s version -o json: %q: %v", bin, out, err)
	}
	return v.Version
}

// kubeDirs is the checkout's bin/kube, which `make kube` fills.
func kubeDirs(t testing.TB) []string {
	t.Helper()
	dir, err := filepath.Abs("../bin/kube")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := images.ReadManifest(filepath.Join(dir, v1alpha1.DefaultKubernetesVersion)); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Kubernetes build in %s (run `make kube`): %v", dir, err)
		}
		t.Skipf("no Kubernetes build in %s (run `make kube`): %v", dir, err)
	}
	return []string{dir}
}

// requireControlPlaneJoin fails the test when bin cannot join a master to
// a control plane the way apply drives it (token and certificate key on
// stdin): the cluster has three masters.
func requireControlPlaneJoin(t testing.TB, bin string) {
	t.Helper()
	out, err := exec.Command(bin, "join", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--control-plane") || !strings.Contains(string(out), "--certificate-key-file") {
		t.Fatalf("%s join has no --control-plane --certificate-key-file: a cluster of three masters cannot be applied (%v)", bin, err)
	}
}

// logWriter sends progress lines to the test log.
type logWriter struct {
	t  testing.TB
	mu sync.Mutex
	// all keeps everything, for tests that look for secrets in it.
	all bytes.Buffer
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(l)
	}
	return len(p), nil
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

// options are Options for a cluster file, with progress and debug logs in
// the test log (and in out).
func options(t testing.TB, clusterFile string) (Options, *logWriter) {
	out := &logWriter{t: t}
	return Options{
		ClusterFile: clusterFile,
		Log:         slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Progress:    progress.New(out, progress.Options{}),
	}, out
}

// rewrite writes a copy of the lab's cluster file changed by edit.
func rewrite(t testing.TB, l *labtest.Lab, edit func(c *v1alpha1.Cluster)) string {
	t.Helper()
	data, err := os.ReadFile(l.ClusterFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v1alpha1.Decode(l.ClusterFile, data)
	if err != nil {
		t.Fatal(err)
	}
	edit(c)
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v1alpha1.Load(p); err != nil {
		t.Fatalf("the rewritten cluster file: %v\n%s", err, out)
	}
	return p
}

// withoutHosts drops the named hosts from a cluster file.
func withoutHosts(names ...string) func(*v1alpha1.Cluster) {
	return func(c *v1alpha1.Cluster) {
		var keep []v1alpha1.Host
		for _, h := range c.Hosts {
			drop := false
			for _, n := range names {
				drop = drop || h.Name == n
			}
			if !drop {
				keep = append(keep, h)
			}
		}
		c.Hosts = keep
	}
}

// onHost runs cmd as root on a lab machine; failures fail the test.
func onHost(t testing.TB, l *labtest.Lab, machine, cmd string) string {
	t.Helper()
	return l.Run(t, machine, cmd)
}

// tryRun runs cmd as root and returns its output and error.
func tryRun(t testing.TB, l *labtest.Lab, machine, cmd string) (string, error) {
	t.Helper()
	c, err := sshx.Dial(context.Background(), l.SSHConfig(t, machine, ""))
	if err != nil {
		return "", err
	}
	defer c.Close()
	out, err := c.Output(context.Background(), cmd)
	return strings.TrimSpace(string(out)), err
}

// watchProcesses samples every process's command line on machine until
// stop is called, which returns everything seen. It shows what any user of
// the machine could read in /proc while the installer ran. The sampling
// loop ends when stop kills it (by the PID it printed), or after ten
// minutes whatever happens.
func watchProcesses(t testing.TB, l *labtest.Lab, machine string) (stop func() string) {
	t.Helper()
	c, err := sshx.Dial(context.Background(), l.SSHConfig(t, machine, ""))
	if err != nil {
		t.Fatalf("ssh %s: %v", machine, err)
	}
	var mu sync.Mutex
	var seen bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return seen.Write(p)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(context.Background(), "echo \"watcher $$\"; i=0; while [ $i -lt 12000 ]; do ps -eww -o args; sleep 0.05; i=$((i+1)); done", nil, w, nil)
	}()
	return func() string {
		mu.Lock()
		first, _, _ := strings.Cut(seen.String(), "\n")
		mu.Unlock()
		if pid, ok := strings.CutPrefix(first, "watcher "); ok {
			if _, err := tryRun(t, l, machine, "kill "+pid); err != nil {
				t.Errorf("stop the process watcher on %s: %v", machine, err)
			}
		}
		<-done
		c.Close()
		mu.Lock()
		defer mu.Unlock()
		return seen.String()
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// assertClean checks that nothing of anvil's is left on a machine: files,
// units, links, processes.
func assertClean(t testing.TB, l *labtest.Lab, machine string) {
	t.Helper()
	checks := map[string]string{
		"files": "for p in /etc/anvil /etc/kubernetes /var/lib/anvil /opt/anvil /run/anvil /var/log/anvil /var/lib/kubelet /etc/containerd /run/containerd /etc/cni/net.d/10-anvil.conflist; do [ -e $p ] && find $p | head -n 20; done; true",
		"links": "for p in " + strings.Join(linkGlobs(), " ") + "; do case $(readlink $p) in /opt/anvil/*) echo $p ;; esac; done; true",
		// anvil-lab-* are the lab machine's own, not anvil's on a host.
		"units":     "ls /etc/systemd/system | grep -E '^(anvil|kube|containerd)' | grep -v '^anvil-lab-' ; true",
		"active":    "systemctl list-units --all --no-legend 'anvil*' 'kube*' 'containerd*' | grep -v 'not-found' | grep -v 'anvil-lab-' ; true",
		"processes": "ps -e -o comm= | grep -E '^(anvil|kube-|kubelet|etcd|containerd)' ; true",
		"mounts":    "grep -E ' /(var/lib/kubelet|run/containerd)' /proc/mounts ; true",
		"routes":    "ip route show proto 97 ; true",
	}
	for what, cmd := range checks {
		if out := onHost(t, l, machine, cmd); out != "" {
			t.Errorf("%s: %s left behind:\n%s", machine, what, out)
		}
	}
}

func fmtDuration(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
