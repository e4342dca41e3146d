package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// takenPrefixes lists every IPv4 address and route this machine has, in
// every routing table, so a lab subnet never shadows one of them.
func takenPrefixes() ([]used, error) {
	names := map[int]string{}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	var out []used
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, used{p.Masked(), fmt.Sprintf("address %s on %s", p, names[a.LinkIndex])})
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok {
			out = append(out, used{p.Masked(), fmt.Sprintf("route %s dev %s (table %d)", p.Masked(), names[r.LinkIndex], r.Table)})
		}
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

// ensureBridge makes the lab's bridge with the gateway address on it, or
// finds it. Spanning tree stays off (the default), so a port forwards as
// soon as it is up: heal takes effect at once.
func ensureBridge(lab string, subnet netip.Prefix) (netlink.Link, error) {
	name := bridgeName(lab)
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: bridgeMAC(lab)}}
		if err := netlink.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("find bridge %s: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	case link.Type() != "bridge" || !ownedAlias(link.Attrs().Alias, bridgeAlias(lab)):
		return nil, fmt.Errorf("interface %s exists and is not lab %s's bridge (alias %q)", name, lab, link.Attrs().Alias)
	}
	if err := netlink.LinkSetAlias(link, bridgeAlias(lab)); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	gw := &netlink.Addr{IPNet: ipNet(offset(subnet, gatewayOffset), subnet.Bits())}
	if err := netlink.AddrReplace(link, gw); err != nil {
		return nil, fmt.Errorf("address bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bring up bridge %s: %w", name, err)
	}
	return link, nil
}

// newNetns creates a network namespace and returns a file for it; nothing
// else holds it, so it disappears (with the machine's veth) once the
// machine that gets the file exits. No /run/netns mount to clean up.
func newNetns() (*os.File, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// unshare(2) moves only this thread; it goes back before it is
		// unlocked, or else stays locked so the runtime retires it.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, newErr := netns.New()
		if err := netns.Set(orig); err != nil {
			if newErr == nil {
				ns.Close()
			}
			ch <- result{err: fmt.Errorf("return to host network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		if newErr != nil {
			ch <- result{err: fmt.Errorf("new network namespace: %w", newErr)}
			return
		}
		ch <- result{ns: ns}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return os.NewFile(uintptr(r.ns), "netns"), nil
}

// machineNet is a machine's network namespace, wired to the bridge: eth0
// inside with the machine's address, the host end enslaved to the bridge.
// The caller hands ns to systemd-nspawn and closes its copy.
func machineNet(lab string, br netlink.Link, ms *machineState, subnet netip.Prefix) (ns *os.File, err error) {
	if old, err := netlink.LinkByName(ms.Veth); err == nil {
		if !ownedAlias(old.Attrs().Alias, vethAlias(lab, ms.Name)) {
			return nil, fmt.Errorf("interface %s exists and is not %s's (alias %q)", ms.Veth, ms.Name, old.Attrs().Alias)
		}
		if err := netlink.LinkDel(old); err != nil {
			return nil, fmt.Errorf("remove stale %s: %w", ms.Veth, err)
		}
	}
	ns, err = newNetns()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ns.Close()
		}
	}()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: ms.Veth, MasterIndex: br.Attrs().Index},
		PeerName:         guestIface,
		PeerHardwareAddr: guestMAC(lab, ms.Name),
		PeerNamespace:    netlink.NsFd(int(ns.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create %s for %s: %w", ms.Veth, ms.Name, err)
	}
	host, err := netlink.LinkByName(ms.Veth)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", ms.Veth, err)
	}
	if err := netlink.LinkSetAlias(host, vethAlias(lab, ms.Name)); err != nil {
		return nil, fmt.Errorf("%s: %w", ms.Veth, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("bring up %s: %w", ms.Veth, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(int(ns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("enter %s's namespace: %w", ms.Name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("%s: lo: %w", ms.Name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("%s: bring up lo: %w", ms.Name, err)
	}
	eth, err := h.LinkByName(guestIface)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", ms.Name, guestIface, err)
	}
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(ms.Address, subnet.Bits())}); err != nil {
		return nil, fmt.Errorf("%s: address %s: %w", ms.Name, ms.Address, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return nil, fmt.Errorf("%s: bring up %s: %w", ms.Name, guestIface, err)
	}
	return ns, nil
}

// ownedAlias accepts a link named after us that carries our alias, or
// none yet (a crash between creating and naming it).
func ownedAlias(alias, want string) bool { return alias == "" || alias == want }

// LinkState is the state of a machine's cable to the lab bridge.
type LinkState string

const (
	LinkUp   LinkState = "up"
	LinkCut  LinkState = "cut"  // lab cut: the host end is down
	LinkNone LinkState = "none" // the machine is off, so is its NIC
)

func linkState(veth string) LinkState {
	l, err := netlink.LinkByName(veth)
	if err != nil {
		return LinkNone
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return LinkCut
	}
	return LinkUp
}

func setLink(veth string, up bool) error {
	l, err := netlink.LinkByName(veth)
	if err != nil {
		return fmt.Errorf("find %s: %w", veth, err)
	}
	if up {
		err = netlink.LinkSetUp(l)
	} else {
		err = netlink.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set %s up=%t: %w", veth, up, err)
	}
	return nil
}

// labLinks returns the interfaces that belong to lab ("" for every lab):
// found by alias, and by the names derived from the lab's name, so a crash
// between creating a link and naming it still leaves it findable.
func labLinks(lab string, names []string) ([]netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	if lab != "" {
		want[bridgeName(lab)] = true
	}
	var out []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		mine := want[a.Name]
		switch {
		case lab == "":
			mine = mine || strings.HasPrefix(a.Alias, aliasPrefix)
		default:
			mine = mine || a.Alias == bridgeAlias(lab) || strings.HasPrefix(a.Alias, bridgeAlias(lab)+"/")
		}
		if mine {
			out = append(out, l)
		}
	}
	return out, nil
}

// labsFromLinks names the labs whose links exist, for down --all.
func labsFromLinks() ([]string, error) {
	links, err := labLinks("", nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		name, _, _ := strings.Cut(strings.TrimPrefix(l.Attrs().Alias, aliasPrefix), "/")
		if name != "" {
			out = append(out, name)
		}
	}
	return out, nil
}
