package podnet

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// TestRoutesFollowNodes runs node a's controller in a namespace and
// changes the Nodes under it: routes appear, move, and go, stale anvil
// routes from before are removed at start, and routes of other programs
// (protocol static) are never touched — not even one to a Node's range.
func TestRoutesFollowNodes(t *testing.T) {
	l := newLab(t)
	a, b, c := l.machine(t), l.machine(t), l.machine(t)
	l.create(t, node("a", cidrs("10.244.1.0/24"), a.Addr.String()))
	l.create(t, node("b", cidrs("10.244.2.0/24"), b.Addr.String()))

	// Left from an earlier run: an anvil route to a Node that is gone.
	a.ip(t, "route", "add", "10.244.9.0/24", "via", b.Addr.String(), "proto", anvilProto())
	// Another program's: one elsewhere, and one to a range a Node will
	// claim later.
	a.ip(t, "route", "add", "10.250.0.0/24", "via", c.Addr.String(), "proto", "static")
	a.ip(t, "route", "add", "10.244.7.0/24", "via", c.Addr.String(), "proto", "static")
	foreign := a.routes(t, "static")

	start := time.Now()
	ctl := l.start(t, a, "a", nil)
	want := map[string]string{"10.244.2.0/24": b.Addr.String()}
	waitRoutes(t, a, want)
	t.Logf("start to routes in place (informer list included): %v", time.Since(start))

	st := ctl.Status()
	if len(st.Routes) != 1 || st.Routes[0].Node != "b" || !st.Masquerade || !st.Forwarding || st.Err != nil {
		t.Fatalf("status %+v", st)
	}
	if data, err := os.ReadFile(a.root.Path(CNIConfigPath)); err != nil || !strings.Contains(string(data), `"subnet": "10.244.1.0/24"`) {
		t.Fatalf("CNI config of a: %v\n%s", err, data)
	}

	t.Run("a Node added", func(t *testing.T) {
		t0 := time.Now()
		l.create(t, node("c", cidrs("10.244.3.0/24"), c.Addr.String()))
		want["10.244.3.0/24"] = c.Addr.String()
		waitRoutes(t, a, want)
		t.Logf("Node created to route programmed: %v", time.Since(t0))
	})
	t.Run("a Node without a pod CIDR waits", func(t *testing.T) {
		l.create(t, node("d", nil, l.addr(200).String()))
		waitWaiting(t, ctl, "d", "node d has no pod CIDR yet: is the controller-manager running with --allocate-node-cidrs?")
		eventually(t, 5*time.Second, func() error {
			if !strings.Contains(a.logs.String(), "node d has no pod CIDR yet") {
				return fmt.Errorf("the log does not say why node d waits")
			}
			return nil
		})
		l.update(t, "d", func(n *corev1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.4.0/24", []string{"10.244.4.0/24"} })
		want["10.244.4.0/24"] = l.addr(200).String()
		waitRoutes(t, a, want)
		waitWaiting(t, ctl, "d", "")
	})
	t.Run("a route that is another program's is left alone", func(t *testing.T) {
		l.create(t, node("e", cidrs("10.244.7.0/24"), l.addr(201).String()))
		waitWaiting(t, ctl, "e", "not anvil's")
		if got := a.routes(t, "static"); !maps.Equal(got, foreign) {
			t.Fatalf("foreign routes %v, were %v", got, foreign)
		}
		waitRoutes(t, a, want)
		l.delete(t, "e")
		waitWaiting(t, ctl, "e", "")
	})
	t.Run("a Node's address changes", func(t *testing.T) {
		t0 := time.Now()
		l.update(t, "b", func(n *corev1.Node) { n.Status.Addresses[0].Address = l.addr(202).String() })
		want["10.244.2.0/24"] = l.addr(202).String()
		waitRoutes(t, a, want)
		t.Logf("Node updated to route replaced: %v", time.Since(t0))
	})
	t.Run("a Node's pod CIDR goes away", func(t *testing.T) {
		l.update(t, "c", func(n *corev1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil })
		delete(want, "10.244.3.0/24")
		waitRoutes(t, a, want)
		waitWaiting(t, ctl, "c", "has no pod CIDR yet")
	})
	t.Run("a Node is deleted", func(t *testing.T) {
		t0 := time.Now()
		l.delete(t, "b")
		delete(want, "10.244.2.0/24")
		waitRoutes(t, a, want)
		t.Logf("Node deleted to route removed: %v", time.Since(t0))
	})
	if got := a.routes(t, "static"); !maps.Equal(got, foreign) {
		t.Fatalf("foreign routes %v, were %v", got, foreign)
	}
	if n := strings.Count(a.logs.String(), "route replaced"); n != 1 {
		t.Fatalf("%d routes replaced, want 1 (node b's move)", n)
	}
}

// TestOwnNodeWaitsForItsPodCIDR: without a pod CIDR on its own Node the
// node writes no CNI config and says why, in Status and in the log, again
// on each (backed off) retry; the CNI config comes as soon as the Node
// gets one.
func TestOwnNodeWaitsForItsPodCIDR(t *testing.T) {
	l := newLab(t)
	a := l.machine(t)
	l.create(t, node("a", nil, a.Addr.String()))
	ctl := l.start(t, a, "a", nil)
	why := "node a has no pod CIDR yet: is the controller-manager running with --allocate-node-cidrs?; the CNI config cannot be written yet"
	waitWaiting(t, ctl, "a", why)
	eventually(t, 5*time.Second, func() error {
		if n := strings.Count(a.logs.String(), "node a has no pod CIDR yet"); n < 2 {
			return fmt.Errorf("the log says why %d times, want it repeated by the retries", n)
		}
		return nil
	})
	if _, err := os.Stat(a.root.Path(CNIConfigPath)); !os.IsNotExist(err) {
		t.Fatalf("a CNI config without a pod CIDR: %v", err)
	}
	t0 := time.Now()
	l.update(t, "a", func(n *corev1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.1.0/24", []string{"10.244.1.0/24"} })
	eventually(t, 5*time.Second, func() error {
		_, err := os.Stat(a.root.Path(CNIConfigPath))
		return err
	})
	t.Logf("pod CIDR set to CNI config written: %v", time.Since(t0))
	waitWaiting(t, ctl, "a", "")
	if st := ctl.Status(); len(st.PodCIDRs) != 1 || st.PodCIDRs[0].String() != "10.244.1.0/24" || st.CNIConfig == "" {
		t.Fatalf("status %+v", st)
	}
}

// TestResyncPutsBackWhatWasRemoved: with nothing waiting, no Node
// changing and no kernel notification (nftables changes send none), the
// periodic resync alone puts back the nftables table that something else
// removed — `nft flush ruleset`, as Debian's nftables.service does on
// reload, takes anvil's table too.
func TestResyncPutsBackWhatWasRemoved(t *testing.T) {
	l := newLab(t)
	a, b := l.machine(t), l.machine(t)
	l.create(t, node("a", cidrs("10.244.1.0/24"), a.Addr.String()))
	l.create(t, node("b", cidrs("10.244.2.0/24"), b.Addr.String()))
	ctl := l.start(t, a, "a", func(c *Config) { c.Resync = time.Second })
	waitRoutes(t, a, map[string]string{"10.244.2.0/24": b.Addr.String()})
	eventually(t, 5*time.Second, func() error {
		if st := ctl.Status(); len(st.Waiting) > 0 || st.Err != nil || !st.Masquerade {
			return fmt.Errorf("not settled: %+v", st)
		}
		return nil
	})
	t0 := time.Now()
	a.run(t, "nft", "flush", "ruleset")
	eventually(t, 5*time.Second, func() error {
		if _, err := a.Command(t.Context(), "nft", "list", "table", tableFamily, MasqueradeTable).CombinedOutput(); err != nil {
			return fmt.Errorf("masquerade table not back: %v", err)
		}
		return nil
	})
	t.Logf("table back after %v (resync 1s)", time.Since(t0))
	// The table is in the kernel as soon as nft applies it, a moment
	// before the pass logs it.
	eventually(t, 5*time.Second, func() error {
		if n := strings.Count(a.logs.String(), "masquerade table created"); n != 2 {
			return fmt.Errorf("masquerade table created %d times, want twice", n)
		}
		return nil
	})
}

// TestLinkFlapHealsAtOnce: taking the node's interface down removes every
// route through it (the kernel does that); when it comes back up the
// routes are back at once, on the kernel's notification — not at the
// resync, nor at a retry, both set to minutes here.
func TestLinkFlapHealsAtOnce(t *testing.T) {
	l := newLab(t)
	a, b := l.machine(t), l.machine(t)
	l.create(t, node("a", cidrs("10.244.1.0/24"), a.Addr.String()))
	l.create(t, node("b", cidrs("10.244.2.0/24"), b.Addr.String()))
	l.start(t, a, "a", func(c *Config) { c.retryBase, c.retryMax = 5*time.Minute, 5*time.Minute })
	want := map[string]string{"10.244.2.0/24": b.Addr.String()}
	waitRoutes(t, a, want)

	a.ip(t, "link", "set", "eth0", "down")
	if got := a.routes(t, anvilProto()); len(got) != 0 {
		t.Fatalf("routes through a down link: %v", got)
	}
	t0 := time.Now()
	a.ip(t, "link", "set", "eth0", "up")
	waitRoutes(t, a, want)
	t.Logf("link up to routes back: %v", time.Since(t0))

	// And a route someone deletes is back at once too.
	t0 = time.Now()
	a.ip(t, "route", "del", "10.244.2.0/24")
	waitRoutes(t, a, want)
	t.Logf("route deleted by hand to route back: %v", time.Since(t0))
}

// TestInterfaceNotThereYet: while the configured interface does not
// exist (a bond still coming up) the controller says so, touches no route
// (an anvil route from before stays: with no interface, nothing can be
// judged stale) and writes no CNI config (its MTU comes from the
// interface). When the interface appears, everything follows at once.
func TestInterfaceNotThereYet(t *testing.T) {
	l := newLab(t)
	a, b := l.machine(t), l.machine(t)
	l.create(t, node("a", cidrs("10.244.1.0/24"), a.Addr.String()))
	l.create(t, node("b", cidrs("10.244.2.0/24"), b.Addr.String()))
	a.ip(t, "route", "add", "10.244.9.0/24", "via", b.Addr.String(), "proto", anvilProto())
	ctl := l.start(t, a, "a", func(c *Config) {
		c.Interface = "uplink0"
		c.retryBase, c.retryMax = 5*time.Minute, 5*time.Minute
	})
	eventually(t, 5*time.Second, func() error {
		if st := ctl.Status(); st.Err == nil || !strings.Contains(st.Err.Error(), "interface uplink0") || len(st.Waiting) != 0 {
			return fmt.Errorf("status %+v, want an error naming interface uplink0 and nobody waiting", st)
		}
		return nil
	})
	if got := a.routes(t, anvilProto()); len(got) != 1 || got["10.244.9.0/24"] != b.Addr.String() {
		t.Fatalf("routes changed without an interface: %v", got)
	}
	if _, err := os.Stat(a.root.Path(CNIConfigPath)); !os.IsNotExist(err) {
		t.Fatalf("CNI config written without the interface: %v", err)
	}
	t0 := time.Now()
	a.ip(t, "link", "set", "eth0", "down")
	a.ip(t, "link", "set", "eth0", "name", "uplink0")
	a.ip(t, "link", "set", "uplink0", "up")
	waitRoutes(t, a, map[string]string{"10.244.2.0/24": b.Addr.String()})
	eventually(t, 5*time.Second, func() error {
		_, err := os.Stat(a.root.Path(CNIConfigPath))
		return err
	})
	t.Logf("interface up to routes and CNI config: %v", time.Since(t0))
	data, _ := os.ReadFile(a.root.Path(CNIConfigPath))
	if !strings.Contains(string(data), `"mtu": 1500`) {
		t.Fatalf("CNI config without the interface's MTU:\n%s", data)
	}
}

// TestFightIsThrottled: another program that keeps deleting anvil's route
// (each deletion notified) gets a pass at once at first, then one a second
// — not a busy loop; the route is back once it stops.
func TestFightIsThrottled(t *testing.T) {
	l := newLab(t)
	a, b := l.machine(t), l.machine(t)
	l.create(t, node("a", cidrs("10.244.1.0/24"), a.Addr.String()))
	l.create(t, node("b", cidrs("10.244.2.0/24"), b.Addr.String()))
	l.start(t, a, "a", nil)
	want := map[string]string{"10.244.2.0/24": b.Addr.String()}
	waitRoutes(t, a, want)

	h, err := netlinkHandle(a.path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fight := 3 * time.Second
	end := time.Now().Add(fight)
	route := &netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.244.2.0/24")), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	for time.Now().Before(end) {
		h.RouteDel(route) // mostly "no such route": it is gone already
		time.Sleep(time.Millisecond)
	}
	added := strings.Count(a.logs.String(), "route added") - 1
	t.Logf("route re-added %d times during a %v fight", added, fight)
	if limit := passBurst + int(fight/time.Second) + 2; added > limit {
		t.Fatalf("route re-added %d times in %v, want at most %d", added, fight, limit)
	}
	if !strings.Contains(a.logs.String(), "passes throttled") {
		t.Fatal("the log does not say passes are throttled")
	}
	waitRoutes(t, a, want)
}

func waitRoutes(t *testing.T, m *machine, want map[string]string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if got := m.routes(t, anvilProto()); !maps.Equal(got, want) {
			return fmt.Errorf("anvil routes in %s: %v, want %v", m.Name, got, want)
		}
		return nil
	})
}

// waitWaiting waits until node waits for a reason containing why, or
// (why == "") not at all.
func waitWaiting(t *testing.T, ctl *Controller, node, why string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		st := ctl.Status()
		for _, w := range st.Waiting {
			if w.Node == node {
				if why != "" && strings.Contains(w.Reason, why) {
					return nil
				}
				if why == "" {
					return fmt.Errorf("node %s still waits: %s", node, w.Reason)
				}
			}
		}
		if why == "" {
			return nil
		}
		return fmt.Errorf("node %s does not wait for %q: %+v", node, why, st.Waiting)
	})
}

// TestServiceCIDRRoutedWithoutDefaultRoute: on a machine with no default
// route, the host's own connections to a ClusterIP (the apiserver calling
// a webhook) fail with "network is unreachable" before kube-proxy's rule
// can rewrite them. The controller then routes the Service CIDR through
// the node's interface; once another route covers it (a default route)
// it removes its own, and puts it back when that route goes.
func TestServiceCIDRRoutedWithoutDefaultRoute(t *testing.T) {
	l := newLab(t)
	a := l.machine(t)
	l.create(t, node("a", cidrs("10.244.1.0/24"), a.Addr.String()))
	svc := netip.MustParsePrefix("10.96.0.0/12")
	ctl := l.start(t, a, "a", func(c *Config) { c.ServiceCIDRs = []netip.Prefix{svc} })
	routed := func(want bool) {
		t.Helper()
		eventually(t, 5*time.Second, func() error {
			_, have := a.routes(t, anvilProto())[svc.String()]
			st := ctl.Status()
			switch {
			case have != want:
				return fmt.Errorf("anvil's route to %s there: %v, want %v: %v", svc, have, want, a.routes(t, anvilProto()))
			case want && (len(st.ServiceRoutes) != 1 || st.ServiceRoutes[0] != svc):
				return fmt.Errorf("status: service routes %v, want [%s]", st.ServiceRoutes, svc)
			case !want && len(st.ServiceRoutes) != 0:
				return fmt.Errorf("status: service routes %v, want none", st.ServiceRoutes)
			case len(st.Routes) != 0:
				return fmt.Errorf("status: pod routes %v, want none (the Service CIDR is no Node's)", st.Routes)
			}
			return nil
		})
	}
	routed(true)
	if out := a.ip(t, "route", "get", "10.96.0.10"); !strings.Contains(out, "dev eth0") {
		t.Errorf("ip route get 10.96.0.10: %s, want it through eth0", out)
	}
	if !strings.Contains(a.logs.String(), "service route added") {
		t.Errorf("the log does not say why the route is there:\n%s", a.logs.String())
	}

	// A default route (another program's) covers it: anvil's goes.
	a.ip(t, "route", "add", "default", "dev", "eth0", "proto", "static")
	routed(false)
	a.ip(t, "route", "del", "default")
	routed(true)

	// reset removes it with the other routes.
	a.stop()
	if err := Cleanup(t.Context(), CleanupOptions{Root: a.root, NetNS: a.path}); err != nil {
		t.Fatal(err)
	}
	if r := a.routes(t, anvilProto()); len(r) != 0 {
		t.Errorf("after Cleanup anvil's routes are %v", r)
	}
}
