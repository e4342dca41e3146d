package component_test

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
)

// maxExposure is the highest overall exposure `systemd-analyze security`
// may give each confined unit, as systemd 252 (Debian 12) scores it: 0 is
// sealed, 10 is unconfined, and every unit anvil wrote scored 9.6 before
// it was confined. What keeps the confined units from going lower is what
// they cannot do without: running as root (their files are root's),
// sockets on the host's network, /proc and every other user's files
// (systemd's PrivateUsers=, ProtectProc=, IPAddressDeny=). Raise a figure
// only with the reason beside the component's Sandbox.
var maxExposure = map[string]float64{
	"etcd":                    2.0,
	"kube-apiserver":          2.0,
	"kube-controller-manager": 2.0,
	"kube-scheduler":          2.0,
	"approver":                2.0,
	"agent":                   2.0,
	"backup":                  2.0,
	// CAP_NET_ADMIN, CAP_NET_RAW and packet sockets, for the address
	// and its gratuitous ARP.
	"vip": 2.5,
	// CAP_NET_ADMIN and /proc/sys, for routes, nftables and forwarding.
	"agent-pod-network": 2.4,
}

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9]+)`)

// minSystemdOffline is the first systemd whose `security` reads a unit
// file on its own (--offline=yes).
const minSystemdOffline = 250

// TestSystemdSecurityExposure has systemd's own judge score every confined
// unit (the scheduled backup's included), offline, from the unit file alone: a setting dropped, misspelt or
// loosened shows as a higher exposure than the component's maximum.
func TestSystemdSecurityExposure(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		missing(t, "systemd-analyze is not installed (apt-get install systemd): the units' exposure is not checked")
	}
	out, err := exec.Command(analyze, "--version").Output()
	if err != nil {
		t.Fatalf("systemd-analyze --version: %v", err)
	}
	m := regexp.MustCompile(`^systemd ([0-9]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze --version says %q", out)
	}
	if v, _ := strconv.Atoi(string(m[1])); v < minSystemdOffline {
		missing(t, "systemd "+string(m[1])+" has no `systemd-analyze security --offline` (systemd 250 or later, Debian 12's 252)")
	}

	dir := t.TempDir()
	units := everyUnit(t)
	for _, name := range slices.Sorted(maps.Keys(units)) {
		u := units[name]
		t.Run(name, func(t *testing.T) {
			if u.unconfined {
				t.Skip("unconfined")
			}
			limit, ok := maxExposure[name]
			if !ok {
				t.Fatalf("no maximum exposure for %s: add one to maxExposure", name)
			}
			// The file's name is the unit's: security reads the type from it.
			sub := filepath.Join(dir, name)
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(sub, u.file)
			if err := os.WriteFile(file, u.data, 0o644); err != nil {
				t.Fatal(err)
			}
			report, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", file).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security --offline=yes %s: %v\n%s", file, err, report)
			}
			m := exposureLine.FindSubmatch(report)
			if m == nil {
				t.Fatalf("no overall exposure in\n%s", report)
			}
			got, err := strconv.ParseFloat(string(m[1]), 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s (%s): exposure %.1f, at most %.1f (9.6 unconfined)", name, u.file, got, limit)
			if got > limit {
				t.Errorf("%s scores %.1f, above its maximum %.1f:\n%s", u.file, got, limit, report)
			}
		})
	}
}
