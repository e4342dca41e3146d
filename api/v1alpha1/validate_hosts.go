package v1alpha1

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"unicode"

	"k8s.io/apimachinery/pkg/api/validate/content"
)

// Hosts: names, addresses, SSH, labels and taints of each machine.

// hostAddrs maps every machine address to the path that first claimed it,
// so later rules can name the host an address collides with.
type hostAddrs map[netip.Addr]string

func (v *validator) hosts(c *Cluster) hostAddrs {
	addrs := hostAddrs{}
	if len(c.Hosts) == 0 {
		v.errorf("hosts", ReasonRequired, "at least one host is required")
		return addrs
	}
	names := map[string]int{}
	masters := 0
	rolesKnown := true
	for i, h := range c.Hosts {
		p := indexPath("hosts", i)
		v.hostName(p, h.Name, names, i)
		rolesKnown = rolesKnown && v.decoded(p+".role")

		switch {
		case !h.Address.IsValid():
			v.errorf(p+".address", ReasonRequired, "required: the IP address anvil reaches the host at over SSH")
		default:
			v.hostAddress(p+".address", h.Address, addrs)
		}
		if h.InternalAddress.IsValid() && h.InternalAddress.Unmap() != h.Address.Unmap() {
			v.hostAddress(p+".internalAddress", h.InternalAddress, addrs)
		}

		switch {
		case h.Role == "":
			v.errorf(p+".role", ReasonRequired, "required: one of %s", list(Roles()))
		case !slices.Contains(Roles(), h.Role):
			v.errorf(p+".role", ReasonNotSupported, "%q is not a role: use one of %s", h.Role, list(Roles()))
		case h.Role == RoleMaster:
			masters++
		}

		v.ssh(p+".ssh", h.SSH, &c.SSH)
		v.labels(p+".labels", h.Labels)
		v.taints(p+".taints", h.Taints)
		if v.decoded(p+".runtime") && !slices.Contains(Runtimes(), h.Runtime) {
			v.errorf(p+".runtime", ReasonNotSupported, "%q is not a runtime: use one of %s", h.Runtime, list(Runtimes()))
		}
		if h.Runtime == RuntimeContainerd {
			v.kubeletLabels(p+".labels", h.Labels)
		}
		if h.Role == RoleMaster && h.Runtime == RuntimeNone && c.ControlPlane.Layout == LayoutStaticPod {
			v.errorf(p+".runtime", ReasonInvalid, "controlPlane.layout static-pod runs the control plane in the master's kubelet: a master needs runtime %q there (or use the systemd layout)", RuntimeContainerd)
		}
	}
	v.ssh("ssh", c.SSH, nil)

	switch {
	case !rolesKnown:
		// The count would be off by the roles the decoder rejected.
	case masters == 0:
		v.errorf("hosts", ReasonRequired, "at least one host must have role %q", RoleMaster)
	case masters%2 == 0:
		v.warnf("hosts", "%d masters tolerate no more failures than %d: etcd needs a majority of members up; use an odd number of masters", masters, masters-1)
	}
	return addrs
}

func (v *validator) hostName(p, name string, names map[string]int, i int) {
	p += ".name"
	if name == "" {
		v.errorf(p, ReasonRequired, "required: the host's Kubernetes node name")
		return
	}
	if first, dup := names[name]; dup {
		v.errorf(p, ReasonDuplicate, "%q is also the name of hosts[%d]", name, first)
		return
	}
	names[name] = i
	if problem := dnsNameProblem(name); problem != "" {
		v.errorf(p, ReasonInvalid, "%q is not a valid node name: %s", name, problem)
	}
}

func (v *validator) hostAddress(p string, a netip.Addr, addrs hostAddrs) {
	if problem := addrProblem(a); problem != "" {
		v.errorf(p, ReasonInvalid, "%s %s", a, problem)
		return
	}
	if first, dup := addrs[a.Unmap()]; dup {
		v.errorf(p, ReasonDuplicate, "%s is also %s", a, first)
		return
	}
	addrs[a.Unmap()] = p
}

// ssh checks one ssh block. For a host's block, fields it shares with the
// cluster-wide block (which Default copied in) are skipped: a mistake there
// is reported once, at ssh, not once per host.
func (v *validator) ssh(p string, s SSH, cluster *SSH) {
	var base SSH
	if cluster != nil {
		base = *cluster
	}
	own := func(differs bool) bool { return cluster == nil || differs }
	if own(s.Port != base.Port) && s.Port == 0 {
		v.errorf(p+".port", ReasonInvalid, "0 is not a port (1 to 65535)")
	}
	if own(s.User != base.User) {
		v.loginUser(p+".user", s.User)
	}
	if own(s.KnownHosts != base.KnownHosts) && s.KnownHosts == "" {
		v.errorf(p+".knownHosts", ReasonRequired, "required: the known_hosts file host keys are checked against")
	}
	if s.Bastion == nil || !own(base.Bastion == nil || *s.Bastion != *base.Bastion) {
		return
	}
	b := s.Bastion
	bp := p + ".bastion"
	if b.Address == "" {
		v.errorf(bp+".address", ReasonRequired, "required: the jump host's IP address or DNS name")
	} else if problem := addressOrNameProblem(b.Address); problem != "" {
		v.errorf(bp+".address", ReasonInvalid, "%q %s", b.Address, problem)
	}
	if b.Port == 0 {
		v.errorf(bp+".port", ReasonInvalid, "0 is not a port (1 to 65535)")
	}
	v.loginUser(bp+".user", b.User)
}

func (v *validator) loginUser(p, user string) {
	switch {
	case user == "":
		v.errorf(p, ReasonRequired, "required: the user anvil logs in as")
	case strings.IndexFunc(user, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		v.errorf(p, ReasonInvalid, "%q is not a user name: it contains spaces or control characters", user)
	}
}

func (v *validator) labels(p string, labels map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kp := keyPath(p, k)
		if msgs := content.IsLabelKey(k); len(msgs) > 0 {
			v.errorf(kp, ReasonInvalid, "%q is not a valid label key: %s", k, strings.Join(msgs, "; "))
		}
		if msgs := content.IsLabelValue(labels[k]); len(msgs) > 0 {
			v.errorf(kp, ReasonInvalid, "%q is not a valid label value: %s", labels[k], strings.Join(msgs, "; "))
		}
	}
}

func (v *validator) taints(p string, taints []Taint) {
	type id struct {
		key    string
		effect TaintEffect
	}
	first := map[id]int{}
	for i, t := range taints {
		tp := indexPath(p, i)
		if t.Key == "" {
			v.errorf(tp+".key", ReasonRequired, "required")
		} else if msgs := content.IsLabelKey(t.Key); len(msgs) > 0 {
			v.errorf(tp+".key", ReasonInvalid, "%q is not a valid taint key: %s", t.Key, strings.Join(msgs, "; "))
		}
		if msgs := content.IsLabelValue(t.Value); len(msgs) > 0 {
			v.errorf(tp+".value", ReasonInvalid, "%q is not a valid taint value: %s", t.Value, strings.Join(msgs, "; "))
		}
		switch {
		case t.Effect == "":
			v.errorf(tp+".effect", ReasonRequired, "required: one of %s", list(TaintEffects()))
		case !slices.Contains(TaintEffects(), t.Effect):
			v.errorf(tp+".effect", ReasonNotSupported, "%q is not a taint effect: use one of %s", t.Effect, list(TaintEffects()))
		}
		// The apiserver rejects a Node whose taints repeat a key and effect.
		if !v.decoded(tp+".key") || !v.decoded(tp+".effect") {
			continue
		}
		if j, dup := first[id{t.Key, t.Effect}]; dup {
			v.errorf(tp, ReasonDuplicate, "same key and effect as %s", indexPath(p, j))
		} else {
			first[id{t.Key, t.Effect}] = i
		}
	}
}

// kubeletLabels refuses the labels a kubelet may not give its own Node:
// NodeRestriction lets it set labels in the kubernetes.io and k8s.io
// namespaces only under node.kubernetes.io/, kubelet.kubernetes.io/ and a
// few well-known keys, and the kubelet refuses to start with the others.
func (v *validator) kubeletLabels(p string, labels map[string]string) {
	allowed := []string{"kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
		"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "node.kubernetes.io/instance-type"}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		prefix, _, ok := strings.Cut(k, "/")
		if !ok {
			continue
		}
		restricted := prefix == "kubernetes.io" || prefix == "k8s.io" || strings.HasSuffix(prefix, ".kubernetes.io") || strings.HasSuffix(prefix, ".k8s.io")
		if !restricted || slices.Contains(allowed, k) || prefix == "node.kubernetes.io" || prefix == "kubelet.kubernetes.io" ||
			strings.HasSuffix(prefix, ".node.kubernetes.io") || strings.HasSuffix(prefix, ".kubelet.kubernetes.io") {
			continue
		}
		v.errorf(p+"."+k, ReasonInvalid, "a kubelet may not set %q on its own Node (NodeRestriction): use another prefix, node.kubernetes.io/, or label the Node afterwards", k)
	}
}
