package podnet

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/internal/netnstest"
)

// pod is a namespace wired into a node's bridge the way the CNI bridge
// plugin does it: a veth whose node end is on anvil0 (which holds the
// range's gateway), an address from the node's range, a default route
// through the gateway.
type pod struct {
	name, path string
	// addrs are the pod's addresses, one per range given, in order.
	addrs []netip.Addr
}

func (m *machine) pod(t *testing.T, podCIDRs ...string) pod {
	t.Helper()
	pd := pod{name: m.Name + "p"}
	pd.path = "/run/netns/" + pd.name
	if out, err := exec.Command("ip", "netns", "add", pd.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", pd.name, err, out)
	}
	t.Cleanup(func() {
		netnstest.KillAll(pd.name)
		exec.Command("ip", "netns", "del", pd.name).Run()
	})
	m.ip(t, "link", "add", BridgeName, "type", "bridge")
	m.ip(t, "link", "set", BridgeName, "up")
	m.ip(t, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pd.name)
	m.ip(t, "link", "set", "vpod", "master", BridgeName, "up")
	inPod := func(args ...string) {
		if out, err := exec.Command("ip", append([]string{"-n", pd.name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s in %s: %v: %s", strings.Join(args, " "), pd.name, err, out)
		}
	}
	inPod("link", "set", "lo", "up")
	inPod("link", "set", "eth0", "up")
	for _, c := range podCIDRs {
		p := netip.MustParsePrefix(c)
		gw := p.Addr().Next()
		addr := gw.Next()
		bits := fmt.Sprint(p.Bits())
		// nodad: a fresh namespace needs no duplicate detection, and
		// the address must work at once.
		m.ip(t, "addr", "add", gw.String()+"/"+bits, "dev", BridgeName, "nodad")
		inPod("addr", "add", addr.String()+"/"+bits, "dev", "eth0", "nodad")
		inPod("route", "add", "default", "via", gw.String())
		pd.addrs = append(pd.addrs, addr)
	}
	return pd
}

// echoServer listens on addr inside the namespace at nsPath and tells
// every client the address it came from.
func echoServer(t *testing.T, nsPath string, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	if err := inNetNS(nsPath, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// sourceSeen connects from the namespace at nsPath to an echo server and
// returns the source address the server saw.
func sourceSeen(nsPath string, to netip.AddrPort, timeout time.Duration) (string, error) {
	var seen string
	err := inNetNS(nsPath, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", to.String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		seen, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(seen), err
}

// TestPodToPodAcrossNodes: two nodes, each with a pod, each running its
// controller. Pod a reaches pod b (and back) over the bridge through the
// programmed routes, keeping its address; pod a reaching node b — outside
// the pod CIDR — arrives masqueraded as node a. Before the controllers
// run there is no way at all (the nodes have no default route, so nothing
// can leak through the host).
func TestPodToPodAcrossNodes(t *testing.T) {
	l := newLab(t)
	a, b := l.machine(t), l.machine(t)
	l.create(t, node("a", cidrs("10.244.1.0/24"), a.Addr.String()))
	l.create(t, node("b", cidrs("10.244.2.0/24"), b.Addr.String()))
	pa, pb := a.pod(t, "10.244.1.0/24"), b.pod(t, "10.244.2.0/24")
	podB := echoServer(t, pb.path, pb.addrs[0])
	podA := echoServer(t, pa.path, pa.addrs[0])
	nodeB := echoServer(t, b.path, b.Addr)

	if seen, err := sourceSeen(pa.path, podB, time.Second); err == nil {
		t.Fatalf("pod a reached pod b before any route existed (as %s)", seen)
	}

	t0 := time.Now()
	l.start(t, a, "a", nil)
	l.start(t, b, "b", nil)
	waitRoutes(t, a, map[string]string{"10.244.2.0/24": b.Addr.String()})
	waitRoutes(t, b, map[string]string{"10.244.1.0/24": a.Addr.String()})
	t.Logf("both controllers started to both routes programmed: %v", time.Since(t0))
	t1 := time.Now()
	seen, err := sourceSeen(pa.path, podB, 3*time.Second)
	if err != nil {
		t.Fatalf("pod a to pod b: %v", err)
	}
	t.Logf("pod a to pod b, connect and answer: %v", time.Since(t1))
	if seen != pa.addrs[0].String() {
		t.Fatalf("pod b saw pod a as %s, want %s (pod-to-pod traffic must not be masqueraded)", seen, pa.addrs[0])
	}
	if seen, err := sourceSeen(pb.path, podA, 3*time.Second); err != nil || seen != pb.addrs[0].String() {
		t.Fatalf("pod b to pod a: seen as %q, %v", seen, err)
	}
	if seen, err := sourceSeen(pa.path, nodeB, 3*time.Second); err != nil || seen != a.Addr.String() {
		t.Fatalf("pod a to node b: seen as %q, %v; want node a's %s (masqueraded)", seen, err, a.Addr)
	}
}

// TestCleanup: after a node ran its pod network, Cleanup (as `anvil reset`
// calls it, with the controller stopped) leaves no anvil route, table,
// bridge, CNI config or IPAM reservation; another program's route and
// table stay; a second Cleanup finds nothing to do and is no error.
func TestCleanup(t *testing.T) {
	l := newLab(t)
	a, b := l.machine(t), l.machine(t)
	l.create(t, node("a", cidrs("10.244.1.0/24"), a.Addr.String()))
	l.create(t, node("b", cidrs("10.244.2.0/24"), b.Addr.String()))
	a.pod(t, "10.244.1.0/24") // anvil0, as the bridge plugin makes it
	reservations := a.root.Join(HostLocalDataDir, NetworkName)
	if err := os.MkdirAll(reservations, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(reservations+"/10.244.1.2", []byte("container-id"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.ip(t, "route", "add", "10.250.0.0/24", "via", b.Addr.String(), "proto", "static")
	a.run(t, "nft", "add", "table", "ip", "other")
	l.start(t, a, "a", nil)
	waitRoutes(t, a, map[string]string{"10.244.2.0/24": b.Addr.String()})
	eventually(t, 5*time.Second, func() error {
		_, err := os.Stat(a.root.Path(CNIConfigPath))
		return err
	})
	t0 := time.Now()
	a.stop()
	t.Logf("Run returned %v after its context ended", time.Since(t0))

	opts := CleanupOptions{Root: a.root, NetNS: a.path}
	for i := range 2 {
		if err := Cleanup(t.Context(), opts); err != nil {
			t.Fatalf("cleanup %d: %v", i, err)
		}
		if got := a.routes(t, anvilProto()); len(got) != 0 {
			t.Fatalf("anvil routes left: %v", got)
		}
		if got := a.routes(t, "static"); got["10.250.0.0/24"] != b.Addr.String() {
			t.Fatalf("another program's route is gone: %v", got)
		}
		if out, err := a.Command(t.Context(), "nft", "list", "table", tableFamily, MasqueradeTable).CombinedOutput(); err == nil {
			t.Fatalf("masquerade table left:\n%s", out)
		}
		a.run(t, "nft", "list", "table", "ip", "other")
		if out, err := a.Command(t.Context(), "ip", "link", "show", BridgeName).CombinedOutput(); err == nil {
			t.Fatalf("bridge left: %s", out)
		}
		for _, p := range []string{a.root.Path(CNIConfigPath), reservations} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Fatalf("%s left: %v", p, err)
			}
		}
	}
}

// TestDualStackPodToPod is TestPodToPodAcrossNodes with IPv6 beside IPv4:
// Nodes with two pod CIDRs and two InternalIPs, a cluster with two pod
// CIDRs; the IPv6 route, IPv6 forwarding and the ip6 masquerade are the
// kernel's too.
func TestDualStackPodToPod(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("IPv6 is disabled in this kernel")
	}
	l := newLab(t)
	a, b := l.machine(t), l.machine(t)
	v6 := func(m *machine) netip.Addr {
		a4 := m.Addr.As4()
		return netip.AddrFrom16([16]byte{0xfd, 0, 0x01, 0x99, 0, a4[2], 0, 0, 0, 0, 0, 0, 0, 0, 0, a4[3]})
	}
	for _, m := range []*machine{a, b} {
		m.ip(t, "addr", "add", v6(m).String()+"/64", "dev", "eth0", "nodad")
	}
	l.create(t, node("a", cidrs("10.244.1.0/24", "fd00:10:244:1::/64"), a.Addr.String(), v6(a).String()))
	l.create(t, node("b", cidrs("10.244.2.0/24", "fd00:10:244:2::/64"), b.Addr.String(), v6(b).String()))
	pa := a.pod(t, "10.244.1.0/24", "fd00:10:244:1::/64")
	pb := b.pod(t, "10.244.2.0/24", "fd00:10:244:2::/64")
	dual := func(c *Config) { c.ClusterPodCIDRs = prefixes("10.244.0.0/16", "fd00:10:244::/56") }
	l.start(t, a, "a", dual)
	l.start(t, b, "b", dual)
	waitRoutes(t, a, map[string]string{"10.244.2.0/24": b.Addr.String(), "fd00:10:244:2::/64": v6(b).String()})
	waitRoutes(t, b, map[string]string{"10.244.1.0/24": a.Addr.String(), "fd00:10:244:1::/64": v6(a).String()})

	for _, c := range []struct {
		name     string
		from     pod
		to       netip.AddrPort
		wantSeen netip.Addr
	}{
		{"pod a to pod b, IPv4", pa, echoServer(t, pb.path, pb.addrs[0]), pa.addrs[0]},
		{"pod a to pod b, IPv6", pa, echoServer(t, pb.path, pb.addrs[1]), pa.addrs[1]},
		{"pod b to pod a, IPv6", pb, echoServer(t, pa.path, pa.addrs[1]), pb.addrs[1]},
		{"pod a to node b, IPv6, masqueraded", pa, echoServer(t, b.path, v6(b)), v6(a)},
	} {
		seen, err := sourceSeen(c.from.path, c.to, 3*time.Second)
		if err != nil || seen != c.wantSeen.String() {
			t.Errorf("%s: seen as %q (%v), want %s", c.name, seen, err, c.wantSeen)
		}
	}
	// A route read back must compare equal to the one asked for (the
	// kernel stores an IPv6 route's metric 0 as 1024), else every pass
	// replaces it and each replacement's notification starts another.
	for _, m := range []*machine{a, b} {
		if n := strings.Count(m.logs.String(), "route replaced"); n != 0 {
			t.Errorf("%s replaced routes %d times, though no Node changed", m.Name, n)
		}
	}
	data, err := os.ReadFile(a.root.Path(CNIConfigPath))
	if err != nil || !strings.Contains(string(data), `"subnet": "fd00:10:244:1::/64"`) {
		t.Fatalf("CNI config of a without its IPv6 range: %v\n%s", err, data)
	}
}
