package podnet

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/internal/fsutil"
)

// TestMasqueradeTable: the table is created, left alone when it is right,
// put back when someone changed it, replaced when the cluster's CIDRs
// change, and removed; another program's table is never touched.
func TestMasqueradeTable(t *testing.T) {
	l := newLab(t)
	a := l.machine(t)
	ctx := t.Context()
	a.run(t, "nft", "add", "table", "ip", "other")
	a.run(t, "nft", "add", "chain", "ip", "other", "post", "{ type nat hook postrouting priority 50; }")
	a.run(t, "nft", "add", "rule", "ip", "other", "post", "ip saddr 10.244.0.0/16 counter masquerade")
	other := a.run(t, "nft", "list", "table", "ip", "other")
	ours := func() string { return a.run(t, "nft", "list", "table", tableFamily, MasqueradeTable) }

	dual := prefixes("10.244.0.0/16", "fd00:10:244::/56")
	for i, step := range []struct {
		name    string
		before  func()
		cluster []netip.Prefix
		want    fsutil.Outcome
	}{
		{"created", nil, clusterCIDR, fsutil.Created},
		{"unchanged", nil, clusterCIDR, fsutil.Unchanged},
		{"a rule added by hand is taken out", func() {
			a.run(t, "nft", "add", "rule", tableFamily, MasqueradeTable, "postrouting", "ip saddr 192.0.2.0/24 masquerade")
		}, clusterCIDR, fsutil.Updated},
		{"unchanged again", nil, clusterCIDR, fsutil.Unchanged},
		{"dual-stack", nil, dual, fsutil.Updated},
		{"dual-stack unchanged", nil, dual, fsutil.Unchanged},
	} {
		if step.before != nil {
			step.before()
		}
		got, err := ensureMasquerade(ctx, a.path, step.cluster)
		if err != nil || got != step.want {
			t.Fatalf("step %d (%s): %v %v, want %v", i, step.name, got, err, step.want)
		}
		want, _ := masqueradeRuleset(step.cluster)
		if have := ours(); !sameRuleset(have, want) {
			t.Fatalf("step %d (%s): table\n%s\nwant\n%s", i, step.name, have, want)
		}
	}
	if got := a.run(t, "nft", "list", "table", "ip", "other"); got != other {
		t.Fatalf("another program's table changed:\n%s\nwas\n%s", got, other)
	}
	for i := range 2 {
		if err := removeMasquerade(ctx, a.path); err != nil {
			t.Fatalf("removal %d: %v", i, err)
		}
	}
	if out, err := a.Command(ctx, "nft", "list", "table", tableFamily, MasqueradeTable).CombinedOutput(); err == nil {
		t.Fatalf("table still there:\n%s", out)
	}
	if got := a.run(t, "nft", "list", "table", "ip", "other"); got != other {
		t.Fatalf("another program's table changed by the removal:\n%s", got)
	}
}

func TestNftMissingIsNamed(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := lookNft()
	if !errors.Is(err, ErrNftMissing) || !strings.Contains(err.Error(), "nft") || !strings.Contains(err.Error(), "nftables package") {
		t.Fatalf("error %v, want one naming nft and its package", err)
	}
}

// TestForwarding turns forwarding on inside a namespace (IPv6 too for a
// dual-stack cluster) and leaves it alone when it is on; the host's is
// untouched (guardHost).
func TestForwarding(t *testing.T) {
	l := newLab(t)
	a := l.machine(t)
	a.shell(t, "echo 0 > /proc/sys/net/ipv4/ip_forward; echo 0 > /proc/sys/net/ipv6/conf/all/forwarding")
	dual := prefixes("10.244.0.0/16", "fd00:10:244::/56")
	changed, err := ensureForwarding(a.path, "/proc/sys", dual)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}
	if !slices.Equal(changed, want) {
		t.Fatalf("changed %v, want %v", changed, want)
	}
	if got := a.shell(t, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding"); got != "1\n1\n" {
		t.Fatalf("forwarding in %s: %q", a.Name, got)
	}
	if changed, err := ensureForwarding(a.path, "/proc/sys", dual); err != nil || len(changed) != 0 {
		t.Fatalf("second run changed %v: %v", changed, err)
	}
}

// TestForwardingReadOnly: on a read-only /proc/sys (a container) the error
// says which setting and what to do. The read-only file system is a bind
// mount in a mount namespace of a child process, so the host sees none.
func TestForwardingReadOnly(t *testing.T) {
	if dir := os.Getenv("PODNET_RO_PROCSYS"); dir != "" {
		_, err := ensureForwarding("", dir, clusterCIDR)
		if err == nil {
			t.Fatal("no error on a read-only file system")
		}
		os.Stdout.WriteString("ERR=" + err.Error() + "\n")
		return
	}
	requireNft(t) // root and the test's commands; nft itself is not used
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is missing")
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "net/ipv4/ip_forward")
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && exec "$2" -test.run '^TestForwardingReadOnly$' -test.v`, "sh", dir, self)
	cmd.Env = append(os.Environ(), "PODNET_RO_PROCSYS="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{f + " is 0 and cannot be set to 1", "read-only", "set net.ipv4.ip_forward=1 on the host"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("error does not say %q:\n%s", want, out)
		}
	}
}
