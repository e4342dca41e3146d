package component_test

import (
	"os"
	"path/filepath"
	"testing"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
)

// TestWriteTreeStaysInsideRoot plays whoever laid out a --root tree: its
// etc is a symlink to a directory outside it. Writing the node's units,
// manifests and process specs there must fail and write nothing outside,
// and a diff must not show what is outside either.
func TestWriteTreeStaysInsideRoot(t *testing.T) {
	base := t.TempDir()
	root, outside := filepath.Join(base, "root"), filepath.Join(base, "somewhere-outside")
	for _, d := range []string{root, filepath.Join(outside, "systemd", "system")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(outside, "systemd", "system", "kube-apiserver.service")
	if err := os.WriteFile(secret, []byte("the machine's own unit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "etc")); err != nil {
		t.Fatal(err)
	}
	cs := nodeComponents(t, "")
	units, err := component.Units(cs)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := component.StaticPods(cs)
	if err != nil {
		t.Fatal(err)
	}
	procs, err := component.Processes(cs, component.ProcessOptions{LogDir: hostfs.LogDir})
	if err != nil {
		t.Fatal(err)
	}
	dir := []component.OutputFile{{Path: "/etc/anvil/processes", Mode: os.ModeDir | 0o700}}
	for name, files := range map[string][]component.OutputFile{"units": units, "static pods": pods, "processes": procs, "a directory": dir} {
		t.Run(name, func(t *testing.T) {
			if _, err := component.WriteTree(hostfs.Root(root), files); err == nil {
				t.Error("WriteTree followed etc out of the root")
			} else {
				t.Log(err)
			}
			if d, _, err := component.DiffTree(hostfs.Root(root), files); err == nil {
				t.Errorf("DiffTree read through etc out of the root:\n%s", d)
			}
		})
	}
	var found []string
	filepath.WalkDir(outside, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			found = append(found, p)
		}
		return nil
	})
	if len(found) != 1 || found[0] != secret {
		t.Errorf("outside the root now: %v", found)
	}
	if b, _ := os.ReadFile(secret); string(b) != "the machine's own unit\n" {
		t.Errorf("the machine's unit now reads %q", b)
	}
}
