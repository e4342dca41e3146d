package master_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

// readUnder reads host paths under root, as `anvil render` does.
func readUnder(root hostfs.Root) master.ReadFunc {
	return func(p string) ([]byte, error) { return os.ReadFile(root.Path(p)) }
}

// TestRenderedTreeModes writes each layout's whole tree under a scratch
// root and checks every mode on disk: manifests and everything under
// /etc/anvil (the encryption key included) 0600, units 0644, every
// directory anvil created 0700. A second run changes nothing and the diff
// is then empty.
func TestRenderedTreeModes(t *testing.T) {
	for _, layout := range v1alpha1.Layouts() {
		t.Run(string(layout), func(t *testing.T) {
			out := hostfs.Root(t.TempDir())
			runtime := hostfs.Root("")
			if layout == v1alpha1.LayoutProcess {
				runtime = out // the process layout runs under its root
			}
			p := testPlan(t, testCluster(), "lab-m1", runtime)
			files, err := master.RenderNode(p, layout, readUnder(out))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := component.WriteTree(out, files); err != nil {
				t.Fatal(err)
			}

			want := map[string]fs.FileMode{
				master.EtcdConfigFile:           0o600,
				master.EncryptionConfigFile:     0o600,
				master.AuditPolicyFile:          0o600,
				master.AuthenticationConfigFile: 0o600,
				master.SchedulerConfigFile:      0o600,
			}
			// Every master renews its due certificates on a timer.
			if layout == v1alpha1.LayoutProcess {
				want["/etc/anvil/processes/anvil-certs-renew.json"] = 0o600
			} else {
				want["/etc/systemd/system/anvil-certs-renew.service"] = 0o600
				want["/etc/systemd/system/anvil-certs-renew.timer"] = 0o600
			}
			switch layout {
			case v1alpha1.LayoutSystemd:
				for _, u := range []string{"anvil-etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "anvil-approver", "anvil-agent"} {
					want["/etc/systemd/system/"+u+".service"] = 0o600
				}
			case v1alpha1.LayoutStaticPod:
				for _, m := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "approver"} {
					want["/etc/kubernetes/manifests/"+m+".yaml"] = 0o600
				}
			case v1alpha1.LayoutProcess:
				for _, m := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "approver", "agent"} {
					want["/etc/anvil/processes/"+m+".json"] = 0o600
				}
			}
			got := map[string]fs.FileMode{}
			err = filepath.WalkDir(string(out), func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				fi, err := d.Info()
				if err != nil {
					return err
				}
				rel := "/" + strings.TrimPrefix(strings.TrimPrefix(path, string(out)), "/")
				if d.IsDir() {
					if rel != "/" && fi.Mode().Perm() != 0o700 {
						t.Errorf("directory %s is %04o, want 0700", rel, fi.Mode().Perm())
					}
					return nil
				}
				got[rel] = fi.Mode().Perm()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for path, mode := range want {
				if g, ok := got[path]; !ok {
					t.Errorf("%s was not written", path)
				} else if g != mode {
					t.Errorf("%s is %04o, want %04o", path, g, mode)
				}
			}
			for path := range got {
				if _, ok := want[path]; !ok {
					t.Errorf("unexpected file %s", path)
				}
			}
			for _, d := range []string{hostfs.EtcdDataDir, master.AuditLogDir} {
				if fi, err := os.Stat(out.Path(d)); err != nil || !fi.IsDir() {
					t.Errorf("directory %s not created: %v", d, err)
				}
			}

			// Idempotent: same tree, nothing written, nothing to show.
			again, err := master.RenderNode(p, layout, readUnder(out))
			if err != nil {
				t.Fatal(err)
			}
			written, err := component.WriteTree(out, again)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range written {
				if w.Outcome != fsutil.Unchanged {
					t.Errorf("second run: %s %s", w.Path, w.Outcome)
				}
			}
			if d, changed, err := component.DiffTree(out, again); err != nil || changed {
				t.Errorf("diff after writing: changed %v, %v\n%s", changed, err, d)
			}
		})
	}
}

// TestDiffTree shows changes without writing, and never prints a secret.
func TestDiffTree(t *testing.T) {
	out := hostfs.Root(t.TempDir())
	p := testPlan(t, testCluster(), "lab-m1", "")
	files, err := master.RenderNode(p, v1alpha1.LayoutSystemd, readUnder(out))
	if err != nil {
		t.Fatal(err)
	}
	d, changed, err := component.DiffTree(out, files)
	if err != nil || !changed {
		t.Fatalf("fresh root: changed %v, %v", changed, err)
	}
	if entries, _ := os.ReadDir(string(out)); len(entries) != 0 {
		t.Fatalf("DiffTree wrote %d entries", len(entries))
	}
	for _, want := range []string{
		"--- /dev/null\n+++ " + out.Path("/etc/systemd/system/kube-apiserver.service"),
		"+\t--authorization-mode=Node,RBAC \\",
		"secret " + out.Path(master.EncryptionConfigFile) + " differs (content not shown)",
		"new directory " + out.Path(hostfs.EtcdDataDir) + " (0700)",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q", want)
		}
	}
	if strings.Contains(d, "secretbox") {
		t.Error("diff shows the encryption config")
	}

	if _, err := component.WriteTree(out, files); err != nil {
		t.Fatal(err)
	}
	unit := out.Path("/etc/systemd/system/kube-scheduler.service")
	// As an older anvil wrote it: 0644.
	if err := os.WriteFile(unit, []byte("[Unit]\nDescription=old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(unit, 0o644); err != nil {
		t.Fatal(err)
	}
	d, changed, err = component.DiffTree(out, files)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	for _, want := range []string{"mode " + unit + ": 0644 → 0600", "-Description=old", "+Description=Kubernetes scheduler"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	if b, _ := os.ReadFile(unit); string(b) != "[Unit]\nDescription=old\n" {
		t.Error("DiffTree changed a file")
	}
}

func TestWorkerRendersOnlyTheAgent(t *testing.T) {
	p := testPlan(t, testCluster(), "lab-w1", "")
	files, err := master.RenderNode(p, v1alpha1.LayoutSystemd, func(string) ([]byte, error) { return nil, fs.ErrNotExist })
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Path != "/etc/systemd/system/anvil-agent.service" {
		t.Errorf("worker tree: %+v", files)
	}
	if _, err := master.RenderNode(p, "kubelet", nil); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unknown layout: %v", err)
	}
}
