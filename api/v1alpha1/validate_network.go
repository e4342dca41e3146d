package v1alpha1

import (
	"maps"
	"net/netip"
	"slices"
)

// The control plane's endpoint and the cluster's networks, checked against
// the hosts' addresses and each other.

func (v *validator) controlPlane(c *Cluster, addrs hostAddrs) {
	cp := c.ControlPlane
	switch {
	case cp.Endpoint != "" && cp.Endpoint != cp.VIP.String():
		// An endpoint defaulted from the VIP is checked as the VIP below.
		if problem := addressOrNameProblem(cp.Endpoint); problem != "" {
			v.errorf("controlPlane.endpoint", ReasonInvalid, "%q %s", cp.Endpoint, problem)
		}
	case cp.Endpoint == "" && firstMasterAddress(c).IsValid():
		// Default sets the endpoint whenever it can; without Default, say so.
		v.errorf("controlPlane.endpoint", ReasonRequired, "required: the address or DNS name clients reach the apiserver at")
	}
	if cp.Port == 0 {
		v.errorf("controlPlane.port", ReasonInvalid, "0 is not a port (1 to 65535)")
	}
	if cp.VIP.IsValid() {
		switch problem := addrProblem(cp.VIP); {
		case problem != "":
			v.errorf("controlPlane.vip", ReasonInvalid, "%s %s", cp.VIP, problem)
		case addrs[cp.VIP.Unmap()] != "":
			v.errorf("controlPlane.vip", ReasonDuplicate, "%s is also %s: a VIP must be an address no machine has", cp.VIP, addrs[cp.VIP.Unmap()])
		}
		if len(c.Masters()) == 1 {
			v.warnf("controlPlane.vip", "a VIP with a single master has nowhere to move to; it only helps with two masters or more")
		}
	}
	switch {
	case cp.Layout == "":
		v.errorf("controlPlane.layout", ReasonRequired, "required: one of %s", list(Layouts()))
	case !slices.Contains(Layouts(), cp.Layout):
		v.errorf("controlPlane.layout", ReasonNotSupported, "%q is not a layout: use one of %s", cp.Layout, list(Layouts()))
	}
}

func firstMasterAddress(c *Cluster) netip.Addr {
	if m := c.Masters(); len(m) > 0 {
		return m[0].Address
	}
	return netip.Addr{}
}

func (v *validator) networking(c *Cluster, addrs hostAddrs) {
	n := c.Networking
	svcNet, svc := v.network("networking.serviceCIDR", n.ServiceCIDR)
	podNet, pod := v.network("networking.podCIDR", n.PodCIDR)
	if svc {
		s := svcNet
		switch {
		case s.Addr().Is4() && s.Bits() < maxServiceBitsV4:
			v.errorf("networking.serviceCIDR", ReasonInvalid, "%s is too large: kube-apiserver accepts at most a /%d for IPv4 services", s, maxServiceBitsV4)
		case s.Addr().Is6() && s.Bits() < maxServiceBitsV6:
			v.errorf("networking.serviceCIDR", ReasonInvalid, "%s is too large: kube-apiserver accepts at most a /%d for IPv6 services", s, maxServiceBitsV6)
		case s.Bits() > s.Addr().BitLen()-4:
			// The cluster DNS Service takes the tenth address.
			v.errorf("networking.serviceCIDR", ReasonInvalid, "%s is too small: the cluster DNS Service takes its tenth address; use at least a /%d", s, s.Addr().BitLen()-4)
		}
	}
	if svc && pod {
		switch {
		case svcNet.Addr().Is4() != podNet.Addr().Is4():
			v.errorf("networking.podCIDR", ReasonInvalid, "%s and serviceCIDR %s are different IP families", podNet, svcNet)
		case svcNet.Overlaps(podNet):
			v.errorf("networking.podCIDR", ReasonInvalid, "%s overlaps serviceCIDR %s", podNet, svcNet)
		}
	}
	// Sorted so that the order of errors does not depend on map iteration.
	inside := slices.SortedFunc(maps.Keys(addrs), netip.Addr.Compare)
	if vip := c.ControlPlane.VIP.Unmap(); vip.IsValid() && addrs[vip] == "" {
		inside = append(inside, vip)
		addrs = maps.Clone(addrs)
		addrs[vip] = "controlPlane.vip"
	}
	for _, a := range inside {
		for _, r := range []struct {
			ok     bool
			name   string
			prefix netip.Prefix
		}{{svc, "serviceCIDR", svcNet}, {pod, "podCIDR", podNet}} {
			if r.ok && r.prefix.Contains(a) {
				v.errorf(addrs[a], ReasonInvalid, "%s is inside networking.%s %s: machine addresses must stay out of the cluster's own ranges", a, r.name, r.prefix)
			}
		}
	}
	if v.decoded("networking.network") && !slices.Contains(PodNetworks(), n.Network) {
		v.errorf("networking.network", ReasonNotSupported, "%q is not a pod network: use one of %s", n.Network, list(PodNetworks()))
	}
	switch {
	case n.ClusterDomain == "":
		v.errorf("networking.clusterDomain", ReasonRequired, "required, like %q", DefaultClusterDomain)
	default:
		if problem := dnsNameProblem(n.ClusterDomain); problem != "" {
			v.errorf("networking.clusterDomain", ReasonInvalid, "%q is not a DNS name: %s", n.ClusterDomain, problem)
		}
	}
}

// network checks that p is set and is a network address. It returns the
// network the operator most likely meant, so that the rules comparing it
// with others still run after a host bit was set by mistake.
func (v *validator) network(path string, p netip.Prefix) (netip.Prefix, bool) {
	switch {
	case !v.decoded(path):
		return p, false
	case !p.IsValid():
		v.errorf(path, ReasonRequired, "required: a CIDR prefix")
		return p, false
	case p != p.Masked():
		v.errorf(path, ReasonInvalid, "%s is not a network address: did you mean %s?", p, p.Masked())
	}
	return p.Masked(), true
}
