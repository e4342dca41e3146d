package v1alpha1

import (
	"net"
	"net/netip"
	"strconv"
)

// Masters returns the master hosts in file order; the first is the one
// `cluster apply` initialises.
func (c *Cluster) Masters() []Host { return c.hostsWithRole(RoleMaster) }

// Workers returns the worker hosts in file order.
func (c *Cluster) Workers() []Host { return c.hostsWithRole(RoleWorker) }

func (c *Cluster) hostsWithRole(r Role) []Host {
	var out []Host
	for _, h := range c.Hosts {
		if h.Role == r {
			out = append(out, h)
		}
	}
	return out
}

// Host returns the host called name.
func (c *Cluster) Host(name string) (Host, bool) {
	for _, h := range c.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// MasterURLs are every master's own apiserver URL, in file order: what a
// node fails over across besides the control-plane endpoint.
func (c *Cluster) MasterURLs() []string {
	var out []string
	for _, m := range c.Masters() {
		out = append(out, "https://"+net.JoinHostPort(m.NodeAddress().String(), strconv.Itoa(int(c.ControlPlane.Port))))
	}
	return out
}

// APIServerEndpoint is the control-plane endpoint as host:port.
func (c *Cluster) APIServerEndpoint() string {
	return net.JoinHostPort(c.ControlPlane.Endpoint, strconv.Itoa(int(c.ControlPlane.Port)))
}

// APIServerURL is the https URL clients use.
func (c *Cluster) APIServerURL() string { return "https://" + c.APIServerEndpoint() }

// NodeAddress is the address cluster traffic to and from h uses.
func (h Host) NodeAddress() netip.Addr {
	if h.InternalAddress.IsValid() {
		return h.InternalAddress
	}
	return h.Address
}

// IsMaster reports whether h runs the control plane.
func (h Host) IsMaster() bool { return h.Role == RoleMaster }

// Published is the copy of c that anvil keeps inside the cluster (the
// kube-system/anvil-config ConfigMap that joining masters read): c without
// its ssh blocks, cluster-wide and per host. Those are the workstation's
// business (login users, private key and known_hosts paths, bastions),
// which no machine in the cluster needs, and any client allowed to read
// the ConfigMap would learn them. The file holds no backup identity to
// strip: only recipients, which are public keys. c is left unchanged.
func (c *Cluster) Published() *Cluster {
	out := *c
	out.SSH = SSH{}
	out.Hosts = make([]Host, len(c.Hosts))
	for i, h := range c.Hosts {
		h.SSH = SSH{}
		out.Hosts[i] = h
	}
	out.src = nil
	return &out
}
