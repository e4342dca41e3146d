package component_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
)

// TestUnitsPassSystemdAnalyzeVerify runs Debian's own unit checker on every
// rendered unit. verify also checks that each ExecStart binary exists and is
// executable, and those binaries are built elsewhere, so the units are
// verified in a scratch root (--root) holding the host's system units (for
// multi-user.target and friends) and a placeholder executable at each path
// the units name. The placeholders stand in only for existence: the
// binaries' flags are checked against the real kube-apiserver separately.
func TestUnitsPassSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		missing(t, "systemd-analyze is not installed (apt-get install systemd)")
	}
	const systemUnits = "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(systemUnits, "multi-user.target")); err != nil {
		missing(t, "no system units in "+systemUnits+": "+err.Error())
	}

	// The node's units, and one exercising User=, Environment= and quoting.
	all := append(nodeComponents(t, ""), odd())
	files, err := component.Units(all)
	if err != nil {
		t.Fatal(err)
	}
	root := hostfs.Root(t.TempDir())
	if err := os.MkdirAll(root.Path("/usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", systemUnits, root.Path("/usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy system units: %v\n%s", err, out)
	}
	if _, err := component.WriteTree(root, files); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range all {
		names = append(names, c.UnitName())
		bin := root.Path(c.Binary)
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	cmd := exec.Command(analyze, append([]string{"verify", "--root=" + string(root), "--man=no"}, names...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	// verify exits 0 on warnings such as unknown keys, so any output at all
	// fails the test.
	if err != nil || strings.TrimSpace(out.String()) != "" {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", strings.Join(names, " "), err, out.String())
	}
	t.Logf("verified %s", strings.Join(names, " "))
}

// missing skips a test whose prerequisite is absent, except under CI=true,
// where a skipped check would hide a broken environment.
func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}
