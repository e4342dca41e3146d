package podnet

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// RouteProtocol is the routing protocol number (rtm_protocol) anvil's pod
// routes carry: `ip route show proto 97` lists them, and anvil changes or
// removes no route without it. 97 is unassigned in iproute2's rt_protos
// and used by no common CNI (Calico uses 80, BIRD 12).
const RouteProtocol netlink.RouteProtocol = 97

// Route is a pod route: Node's pod range, reached through its address.
type Route struct {
	Node    string
	PodCIDR netip.Prefix
	Via     netip.Addr
}

func (r Route) String() string { return fmt.Sprintf("%s via %s (node %s)", r.PodCIDR, r.Via, r.Node) }

// Waiting is a Node that has no route (or, for the node itself, no CNI
// config) yet, and why.
type Waiting struct {
	Node   string
	Reason string
}

func noPodCIDRReason(node string) string {
	return fmt.Sprintf("node %s has no pod CIDR yet: is the controller-manager running with --allocate-node-cidrs?", node)
}

// planInput is everything a routing decision depends on, so the decision
// is a pure function, tested without a kernel.
type planInput struct {
	self    string
	cluster []netip.Prefix
	// iface and ifAddrs are the node's own interface and its addresses
	// (with their prefix lengths): a next hop must be on one of those
	// subnets, host-gw has no other way to reach it.
	iface   string
	ifAddrs []netip.Prefix
	nodes   []*corev1.Node
}

type plan struct {
	// own are the node's own pod CIDRs; empty while ownWaiting says why.
	own        []netip.Prefix
	ownWaiting string
	routes     []Route
	waiting    []Waiting
}

// makePlan decides the node's CNI ranges and its routes to every other
// Node. Claims are checked in a fixed order (the node itself, then the
// others by name), so that when two Nodes claim overlapping ranges — which
// the controller-manager never does, but a Node object can say anything —
// the same one wins on every node and the other is reported, never routed.
func makePlan(in planInput) plan {
	var p plan
	nodes := slices.Clone(in.nodes)
	slices.SortFunc(nodes, func(a, b *corev1.Node) int {
		switch {
		case a.Name == in.self:
			return -1
		case b.Name == in.self:
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	if len(nodes) == 0 || nodes[0].Name != in.self {
		p.ownWaiting = fmt.Sprintf("node %s is not registered yet", in.self)
	}
	type claim struct {
		node   string
		prefix netip.Prefix
	}
	var claims []claim
	overlap := func(q netip.Prefix) (string, bool) {
		for _, c := range claims {
			if c.prefix.Overlaps(q) {
				return c.node, true
			}
		}
		return "", false
	}
	for _, n := range nodes {
		self := n.Name == in.self
		raw := n.Spec.PodCIDRs
		if len(raw) == 0 && n.Spec.PodCIDR != "" {
			raw = []string{n.Spec.PodCIDR}
		}
		var reasons []string
		if len(raw) == 0 {
			reasons = append(reasons, noPodCIDRReason(n.Name))
		}
		for _, s := range raw {
			cidr, err := netip.ParsePrefix(s)
			switch {
			case err != nil || cidr.Masked() != cidr:
				reasons = append(reasons, fmt.Sprintf("node %s: pod CIDR %q is not a network prefix", n.Name, s))
				continue
			case !within(cidr, in.cluster):
				reasons = append(reasons, fmt.Sprintf("node %s: pod CIDR %s is outside the cluster's pod CIDR %v", n.Name, cidr, in.cluster))
				continue
			}
			if other, ok := overlap(cidr); ok {
				reasons = append(reasons, fmt.Sprintf("node %s: pod CIDR %s overlaps node %s's", n.Name, cidr, other))
				continue
			}
			claims = append(claims, claim{n.Name, cidr})
			if self {
				p.own = append(p.own, cidr)
				continue
			}
			via, why := nextHop(n, cidr, in)
			if why != "" {
				reasons = append(reasons, why)
				continue
			}
			p.routes = append(p.routes, Route{Node: n.Name, PodCIDR: cidr, Via: via})
		}
		switch {
		case self && len(reasons) > 0:
			// A half-usable own range set is not written: pods would
			// come up single-stack on a dual-stack node.
			p.own = nil
			p.ownWaiting = reasons[0]
		case len(reasons) > 0:
			for _, r := range reasons {
				p.waiting = append(p.waiting, Waiting{Node: n.Name, Reason: r})
			}
		}
	}
	slices.SortFunc(p.routes, func(a, b Route) int { return a.PodCIDR.Addr().Compare(b.PodCIDR.Addr()) })
	return p
}

// nextHop is the first InternalIP of n, of cidr's family, on one of the
// node's own subnets.
func nextHop(n *corev1.Node, cidr netip.Prefix, in planInput) (netip.Addr, string) {
	var seen, mine []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil || ip.Is4() != cidr.Addr().Is4() {
			continue
		}
		ip = ip.Unmap()
		if slices.ContainsFunc(in.ifAddrs, func(own netip.Prefix) bool { return own.Addr() == ip }) {
			mine = append(mine, ip)
			continue
		}
		seen = append(seen, ip)
		for _, own := range in.ifAddrs {
			if own.Contains(ip) {
				return ip, ""
			}
		}
	}
	if len(mine) > 0 && len(seen) == 0 {
		return netip.Addr{}, fmt.Sprintf("node %s: its InternalIP %v is this node's own address on %s", n.Name, mine, in.iface)
	}
	family := "IPv4"
	if cidr.Addr().Is6() {
		family = "IPv6"
	}
	if len(seen) == 0 {
		return netip.Addr{}, fmt.Sprintf("node %s has no %s InternalIP yet, for pod CIDR %s", n.Name, family, cidr)
	}
	var subnets []netip.Prefix
	for _, own := range in.ifAddrs {
		if own.Addr().Is4() == cidr.Addr().Is4() {
			subnets = append(subnets, own.Masked())
		}
	}
	return netip.Addr{}, fmt.Sprintf("node %s: no InternalIP of %v is on %s's subnets %v: host-gw needs the nodes on one link", n.Name, seen, in.iface, subnets)
}

// kernelRoutes reads and changes the routes of one network namespace.
type kernelRoutes struct {
	h *netlink.Handle
}

// ifaceAddrs are the link's addresses that can be next-hop subnets:
// global and unique-local ones, not IPv6 link-local.
func (k kernelRoutes) ifaceAddrs(link netlink.Link) ([]netip.Prefix, error) {
	addrs, err := k.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.IPNet == nil {
			continue
		}
		ip = ip.Unmap()
		if !ip.IsGlobalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}

// owned lists anvil's routes in the main table, both families.
func (k kernelRoutes) owned() ([]netlink.Route, error) {
	var out []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := k.list(fam, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes with protocol %d: %w", RouteProtocol, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// mainTable is every route of the main table, both families, split into
// anvil's and, by destination, everybody else's: one dump per pass, not
// one per route.
func (k kernelRoutes) mainTable() (ours []netlink.Route, others map[netip.Prefix]netlink.Route, err error) {
	others = map[netip.Prefix]netlink.Route{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := k.list(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			if r.Protocol == RouteProtocol {
				ours = append(ours, r)
			} else if _, seen := others[routeDst(r)]; !seen {
				others[routeDst(r)] = r
			}
		}
	}
	return ours, others, nil
}

// uncovered are the prefixes of want that no route of others (the main
// table but anvil's own) covers: a default route, or any other route to a
// prefix holding them, is left to route them.
func uncovered(want []netip.Prefix, others map[netip.Prefix]netlink.Route) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range want {
		covered := false
		for dst := range others {
			if dst.Bits() <= p.Bits() && dst.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

// list retries a dump the kernel interrupted (the table changed under it).
func (k kernelRoutes) list(fam int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	for i := 0; ; i++ {
		rs, err := k.h.RouteListFiltered(fam, filter, mask)
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 5 {
			continue
		}
		return rs, err
	}
}

// syncResult is what one pass over the kernel's routes did and found.
type syncResult struct {
	programmed []Route
	conflicts  []Waiting
	added      []Route
	replaced   []Route
	removed    []netip.Prefix
}

// sync makes anvil's routes exactly want, through link: it removes its
// routes that are not wanted (stale ones from an earlier run included),
// replaces those whose next hop changed in place (no window without a
// route), and adds the missing ones — unless another program already has a
// route to that destination, which is then reported, not overwritten.
// Each of services that no other route covers is wanted too, as a route
// through link without a next hop (Route.Node empty), from the same dump.
// Every route is tried; the errors come back together.
func (k kernelRoutes) sync(link netlink.Link, want []Route, services []netip.Prefix) (syncResult, error) {
	var res syncResult
	var errs []error
	have, others, err := k.mainTable()
	if err != nil {
		return res, err
	}
	want = slices.Clip(want)
	for _, s := range uncovered(services, others) {
		want = append(want, Route{PodCIDR: s})
	}
	wanted := map[netip.Prefix]Route{}
	for _, r := range want {
		wanted[r.PodCIDR] = r
	}
	ok := map[netip.Prefix]bool{}
	for _, r := range have {
		dst := routeDst(r)
		w, isWanted := wanted[dst]
		if isWanted && !ok[dst] && matches(r, w, link) {
			ok[dst] = true
			continue
		}
		if isWanted && !ok[dst] && r.Priority == metric(dst) {
			// Ours, with another next hop: replaced below, in place.
			continue
		}
		if err := k.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s via %s: %w", dst, r.Gw, err))
			continue
		}
		if !isWanted {
			res.removed = append(res.removed, dst)
		}
	}
	ownDst := map[netip.Prefix]bool{}
	for _, r := range have {
		ownDst[routeDst(r)] = true
	}
	for _, w := range want {
		if ok[w.PodCIDR] {
			res.programmed = append(res.programmed, w)
			continue
		}
		if foreign, ok := others[w.PodCIDR]; ok && !ownDst[w.PodCIDR] {
			res.conflicts = append(res.conflicts, Waiting{Node: w.Node, Reason: fmt.Sprintf(
				"node %s: a route to its pod CIDR %s exists that is not anvil's (%s, protocol %s): left alone, not routed",
				w.Node, w.PodCIDR, describe(foreign), foreign.Protocol)})
			continue
		}
		r := kernelRoute(w, link)
		if err := k.h.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s dev %s (node %s): %w", w.PodCIDR, w.Via, link.Attrs().Name, w.Node, err))
			continue
		}
		if ownDst[w.PodCIDR] {
			res.replaced = append(res.replaced, w)
		} else {
			res.added = append(res.added, w)
		}
		res.programmed = append(res.programmed, w)
	}
	return res, errors.Join(errs...)
}

// removeAll deletes every anvil route.
func (k kernelRoutes) removeAll() error {
	have, err := k.owned()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range have {
		if err := k.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s via %s: %w", routeDst(r), r.Gw, err))
		}
	}
	return errors.Join(errs...)
}

func matches(r netlink.Route, w Route, link netlink.Link) bool {
	gw, _ := netip.AddrFromSlice(r.Gw)
	return gw.Unmap() == w.Via && r.LinkIndex == link.Attrs().Index && r.Priority == metric(w.PodCIDR) &&
		r.Table == unix.RT_TABLE_MAIN && len(r.MultiPath) == 0
}

// metric is the route's priority as the kernel stores it when none is
// given: 0 for IPv4, 1024 for IPv6 (IP6_RT_PRIO_USER). Set explicitly, so
// that what anvil asks for and what it reads back compare equal.
func metric(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1024
}

func kernelRoute(w Route, link netlink.Link) netlink.Route {
	return netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNet(w.PodCIDR),
		Gw:        net.IP(w.Via.AsSlice()),
		Protocol:  RouteProtocol,
		Priority:  metric(w.PodCIDR),
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.SCOPE_UNIVERSE,
		Family:    family(w.PodCIDR),
	}
}

func describe(r netlink.Route) string {
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		return "via " + gw.Unmap().String()
	}
	return fmt.Sprintf("dev index %d", r.LinkIndex)
}

// routeDst is the route's destination; netlink leaves Dst nil for a
// default route.
func routeDst(r netlink.Route) netip.Prefix {
	if r.Dst == nil {
		if r.Family == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	ip, _ := netip.AddrFromSlice(r.Dst.IP)
	ones, _ := r.Dst.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
