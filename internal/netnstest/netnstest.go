package netnstest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Network is a bridge with namespaces attached, on 10.199.N.0/24; the host
// end of the bridge is .1 and namespaces get .2, .3, ….
type Network struct {
	Bridge   string
	Prefix   netip.Prefix
	HostAddr netip.Addr

	mu   sync.Mutex
	next netip.Addr
	id   int
}

// NS is one namespace on a Network: a machine with its own address.
type NS struct {
	Name string
	Addr netip.Addr
	// HostIf is the host end of its veth, attached to the bridge.
	HostIf string
}

// Require fails (under CI=true) or skips a test that cannot create
// namespaces here.
func Require(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "network namespaces need root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "the ip command (iproute2) is missing"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing under CI: %s", why)
	}
	t.Skip(why)
}

// NewNetwork claims a free 10.199.N.0/24 and creates its bridge.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	Require(t)
	used := hostPrefixes(t)
	for i := 1; i < 255; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 199, byte(i), 0}), 24)
		if overlapsAny(p, used) {
			continue
		}
		br := fmt.Sprintf("anvtbr%d", i)
		// Creating the bridge is the claim: it fails if another test has it.
		if err := run("ip", "link", "add", br, "type", "bridge"); err != nil {
			continue
		}
		n := &Network{Bridge: br, Prefix: p, HostAddr: p.Addr().Next(), id: i}
		n.next = n.HostAddr.Next()
		t.Cleanup(func() { run("ip", "link", "del", br) })
		must(t, run("ip", "addr", "add", n.HostAddr.String()+"/24", "dev", br))
		must(t, run("ip", "link", "set", br, "up"))
		return n
	}
	t.Fatal("no free 10.199.N.0/24 subnet for a test network")
	return nil
}

// Add creates a namespace attached to the network, with lo up, its address
// on eth0 and a default route through the host end.
func (n *Network) Add(t testing.TB) *NS {
	t.Helper()
	n.mu.Lock()
	addr := n.next
	n.next = n.next.Next()
	n.mu.Unlock()
	last := addr.As4()[3]
	ns := &NS{
		Name:   fmt.Sprintf("anvt%d-%d", n.id, last),
		Addr:   addr,
		HostIf: fmt.Sprintf("anvt%dv%d", n.id, last),
	}
	peer := ns.HostIf + "p"
	must(t, run("ip", "netns", "add", ns.Name))
	t.Cleanup(func() {
		KillAll(ns.Name)
		run("ip", "netns", "del", ns.Name)
	})
	must(t, run("ip", "link", "add", ns.HostIf, "type", "veth", "peer", "name", peer))
	t.Cleanup(func() { run("ip", "link", "del", ns.HostIf) })
	must(t, run("ip", "link", "set", peer, "netns", ns.Name))
	must(t, run("ip", "link", "set", ns.HostIf, "master", n.Bridge))
	must(t, run("ip", "link", "set", ns.HostIf, "up"))
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "set", peer, "name", "eth0"},
		{"ip", "addr", "add", addr.String() + "/24", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "default", "via", n.HostAddr.String()},
	} {
		must(t, run(append([]string{"ip", "netns", "exec", ns.Name}, c...)...))
	}
	return ns
}

// Command runs name inside the namespace.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// KillAll ends every process still inside the namespace (things a failed
// test started there and could not stop); only processes the test started
// can be in a namespace it created.
func KillAll(name string) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		exec.Command("kill", "-9", f).Run()
	}
}

// SetLink takes the namespace's link down or up, to cut it off the network.
func (ns *NS) SetLink(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return run("ip", "link", "set", ns.HostIf, state)
}

func hostPrefixes(t testing.TB) []netip.Prefix {
	out, err := exec.Command("ip", "-o", "addr", "show").Output()
	if err != nil {
		t.Fatalf("ip addr: %v", err)
	}
	var ps []netip.Prefix
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					ps = append(ps, p.Masked())
				}
			}
		}
	}
	rout, _ := exec.Command("ip", "-o", "route", "show").Output()
	for _, line := range strings.Split(string(rout), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			if p, err := netip.ParsePrefix(f[0]); err == nil {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
