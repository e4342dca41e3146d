package v1alpha1

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"filippo.io/age"
	"k8s.io/apimachinery/pkg/api/validate/content"
)

// Limits other programs impose, checked here so that an operator hears about
// them from `anvil config validate` rather than from a component that
// refuses to start halfway through an apply.
const (
	// kube-apiserver refuses a service range with more than 2^20 addresses.
	maxServiceBitsV4 = 12
	maxServiceBitsV6 = 108
	// etcd refuses an election timeout under 5 heartbeats or over 50s.
	minElectionHeartbeats = 5
	maxElectionTimeout    = 50 * time.Second
	// etcd's documentation suggests 8 GiB as the largest backend quota.
	maxSuggestedQuota = 8 << 30
)

// Validate checks a defaulted cluster (see Default) against every rule and
// reports all problems at once. Warnings never make err non-nil; err, when
// non-nil, is FieldErrors. For a cluster that came from Decode, each problem
// carries the file and line of its field, or of the nearest enclosing one
// when the field was left out.
func Validate(c *Cluster) (warnings FieldErrors, err error) {
	warnings, errs := validate(c)
	return warnings, errs.err()
}

// validate is Validate with the errors as a list, for Load to add the
// decode problems to. Fields the decoder rejected are not checked again.
func validate(c *Cluster) (warnings, errs FieldErrors) {
	v := &validator{src: c.src}
	v.document(c)
	addrs := v.hosts(c)
	v.controlPlane(c, addrs)
	v.networking(c, addrs)
	v.etcd(c.Etcd)
	v.pki(c.PKI)
	v.backup(c.Backup)
	v.components(c.Components)
	v.errs.sortByPosition()
	v.warns.sortByPosition()
	if len(v.warns) == 0 {
		v.warns = nil
	}
	return v.warns, v.errs
}

type validator struct {
	src   *source
	errs  FieldErrors
	warns FieldErrors
}

// errorf records a problem with path, unless the decoder already reported
// that field (see source.rejected).
func (v *validator) errorf(path string, reason Reason, format string, args ...any) {
	if v.src.isRejected(path) {
		return
	}
	e := &FieldError{Path: path, Reason: reason, Message: fmt.Sprintf(format, args...)}
	v.src.locate(e)
	v.errs = append(v.errs, e)
}

// decoded is false for a path the decoder rejected, where a default now
// stands in for a value the file had. Rules that compare fields skip such a
// field: comparing with a default the operator never wrote would report a
// problem that is not in the file.
func (v *validator) decoded(path string) bool { return !v.src.isRejected(path) }

func (v *validator) warnf(path string, format string, args ...any) {
	if v.src.isRejected(path) {
		return
	}
	e := &FieldError{Path: path, Reason: ReasonInvalid, Message: fmt.Sprintf(format, args...)}
	v.src.locate(e)
	v.warns = append(v.warns, e)
}

func (v *validator) document(c *Cluster) {
	switch c.APIVersion {
	case APIVersion:
	case "":
		v.errorf("apiVersion", ReasonRequired, "required: set it to %q", APIVersion)
	default:
		v.errorf("apiVersion", ReasonNotSupported, "%q is not supported: use %q", c.APIVersion, APIVersion)
	}
	switch c.Kind {
	case KindCluster:
	case "":
		v.errorf("kind", ReasonRequired, "required: set it to %q", KindCluster)
	default:
		v.errorf("kind", ReasonNotSupported, "%q is not supported: use %q", c.Kind, KindCluster)
	}
	switch {
	case c.Name == "":
		v.errorf("name", ReasonRequired, "required: a DNS label like %q", "prod-eu1")
	case len(content.IsDNS1123Label(c.Name)) > 0:
		v.errorf("name", ReasonInvalid, "%q is not a DNS label: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", c.Name)
	}
	switch {
	case c.KubernetesVersion == "":
		v.errorf("kubernetesVersion", ReasonRequired, "required, like %q", DefaultKubernetesVersion)
	case !isVersion(c.KubernetesVersion):
		v.errorf("kubernetesVersion", ReasonInvalid, "%q is not a version: write vMAJOR.MINOR.PATCH, like %q", c.KubernetesVersion, DefaultKubernetesVersion)
	}
}

// isVersion accepts vMAJOR.MINOR.PATCH without leading zeros.
func isVersion(s string) bool {
	rest, ok := strings.CutPrefix(s, "v")
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || (len(p) > 1 && p[0] == '0') || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

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

// addrProblem says why a cannot be a machine's address, or "".
func addrProblem(a netip.Addr) string {
	switch {
	case a.Zone() != "":
		return "has a zone: use an address that is not link-local"
	case a.IsUnspecified():
		return "is the unspecified address"
	case a.IsMulticast():
		return "is a multicast address"
	}
	return ""
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

func (v *validator) etcd(e Etcd) {
	hb := v.millis("etcd.heartbeatInterval", e.HeartbeatInterval)
	el := v.millis("etcd.electionTimeout", e.ElectionTimeout)
	if hb && el {
		switch {
		case e.ElectionTimeout.Duration < minElectionHeartbeats*e.HeartbeatInterval.Duration:
			v.errorf("etcd.electionTimeout", ReasonInvalid, "%s is less than %d × heartbeatInterval (%s), which etcd refuses: use at least %s",
				e.ElectionTimeout, minElectionHeartbeats, e.HeartbeatInterval, minElectionHeartbeats*e.HeartbeatInterval.Duration)
		case e.ElectionTimeout.Duration > maxElectionTimeout:
			v.errorf("etcd.electionTimeout", ReasonInvalid, "%s is longer than %s, which etcd refuses", e.ElectionTimeout, maxElectionTimeout)
		}
	}
	switch {
	case e.QuotaBackendBytes <= 0:
		v.errorf("etcd.quotaBackendBytes", ReasonInvalid, "%s is not a size etcd can use: give a positive size like 2Gi", e.QuotaBackendBytes)
	case e.QuotaBackendBytes > maxSuggestedQuota:
		v.warnf("etcd.quotaBackendBytes", "%s is above 8Gi, the largest quota etcd's documentation suggests; a bigger database makes snapshots, defragmentation and restores slow", e.QuotaBackendBytes)
	}
}

// millis checks a raft timing, which etcd takes in whole milliseconds.
func (v *validator) millis(path string, d Duration) bool {
	switch {
	case !v.decoded(path):
	case d.Duration <= 0:
		v.errorf(path, ReasonInvalid, "%s is not positive", d)
	case d.Duration%time.Millisecond != 0:
		v.errorf(path, ReasonInvalid, "%s is not a whole number of milliseconds, which etcd counts in", d)
	default:
		return true
	}
	return false
}

func (v *validator) pki(p PKI) {
	switch {
	case p.KeyAlgorithm == "":
		v.errorf("pki.keyAlgorithm", ReasonRequired, "required: one of %s", list(KeyAlgorithms()))
	case !slices.Contains(KeyAlgorithms(), p.KeyAlgorithm):
		v.errorf("pki.keyAlgorithm", ReasonNotSupported, "%q is not a key algorithm: use one of %s", p.KeyAlgorithm, list(KeyAlgorithms()))
	}
	ca := v.positive("pki.caValidity", p.CAValidity)
	cert := v.positive("pki.certValidity", p.CertValidity)
	if ca && cert && p.CertValidity.Duration > p.CAValidity.Duration {
		v.errorf("pki.certValidity", ReasonInvalid, "%s is longer than caValidity (%s): a certificate cannot outlive its CA", p.CertValidity, p.CAValidity)
	}
	for i, san := range p.CertSANs {
		problem := ""
		if name, wildcard := strings.CutPrefix(san, "*."); wildcard {
			if reason := dnsNameProblem(strings.ToLower(name)); reason != "" {
				problem = "is not a wildcard DNS name: " + reason
			}
		} else {
			problem = addressOrNameProblem(san)
		}
		if problem != "" {
			v.errorf(indexPath("pki.certSANs", i), ReasonInvalid, "%q %s", san, problem)
		}
	}
}

func (v *validator) positive(path string, d Duration) bool {
	if !v.decoded(path) {
		return false
	}
	if d.Duration <= 0 {
		v.errorf(path, ReasonInvalid, "%s is not positive", d)
		return false
	}
	return true
}

func (v *validator) backup(b Backup) {
	switch {
	case b.Retain < 0:
		v.errorf("backup.retain", ReasonInvalid, "%d is negative: give how many backups to keep", b.Retain)
	case b.Schedule != "" && b.Retain < 1:
		v.errorf("backup.retain", ReasonInvalid, "0 with a schedule would prune every backup as soon as it is taken: keep at least 1")
	}
	if hasControl(b.Schedule) {
		v.errorf("backup.schedule", ReasonInvalid, "%q contains a newline or control character", b.Schedule)
	}
	switch {
	case b.Dir == "":
		v.errorf("backup.dir", ReasonRequired, "required, like %q", DefaultBackupDir)
	case !path.IsAbs(b.Dir) || hasControl(b.Dir):
		v.errorf("backup.dir", ReasonInvalid, "%q is not an absolute path on the masters", b.Dir)
	}
	for i, r := range b.Recipients {
		if _, err := age.ParseX25519Recipient(r); err != nil {
			v.errorf(indexPath("backup.recipients", i), ReasonInvalid, "%q is not an age X25519 recipient (age1…, as age-keygen prints): %v", r, err)
		}
	}
}

func (v *validator) components(c Components) {
	for _, comp := range []struct {
		path string
		args map[string]string
	}{
		{"components.apiServer.extraArgs", c.APIServer.ExtraArgs},
		{"components.controllerManager.extraArgs", c.ControllerManager.ExtraArgs},
		{"components.scheduler.extraArgs", c.Scheduler.ExtraArgs},
	} {
		for _, flag := range slices.Sorted(maps.Keys(comp.args)) {
			p := keyPath(comp.path, flag)
			switch {
			case strings.HasPrefix(flag, "-"):
				v.errorf(p, ReasonInvalid, "write the flag name without the leading dashes: %q", strings.TrimLeft(flag, "-"))
			case !isFlagName(flag):
				v.errorf(p, ReasonInvalid, "%q is not a flag name: use lowercase letters, digits and '-'", flag)
			}
			// Arguments end up in unit files and manifests, where a newline
			// would start a new directive.
			if hasControl(comp.args[flag]) {
				v.errorf(p, ReasonInvalid, "the value contains a newline or control character")
			}
		}
	}
}

// isFlagName accepts [a-z0-9][a-z0-9-]*, the shape of every Kubernetes
// component flag.
func isFlagName(s string) bool {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r == '-' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

// dnsNameProblem says why s is not a lowercase DNS name, or "".
func dnsNameProblem(s string) string {
	if len(s) > content.DNS1123SubdomainMaxLength {
		return "longer than " + strconv.Itoa(content.DNS1123SubdomainMaxLength) + " characters"
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) > content.DNS1123LabelMaxLength {
			return fmt.Sprintf("the part %q is longer than %d characters", label, content.DNS1123LabelMaxLength)
		}
	}
	if len(content.IsDNS1123Subdomain(s)) > 0 {
		return "use lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit"
	}
	return ""
}

// addressOrNameProblem says why s is neither an IP address nor a DNS name
// (in any case, as DNS ignores it), or "". The two common slips, a port or
// a URL, get their own advice.
func addressOrNameProblem(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		if problem := addrProblem(a); problem != "" {
			return problem
		}
		return ""
	}
	if strings.Contains(s, "://") {
		return "is a URL: write only the address or DNS name"
	}
	if _, port, err := net.SplitHostPort(s); err == nil && port != "" {
		return "has a port: write the port in its own field"
	}
	if problem := dnsNameProblem(strings.ToLower(s)); problem != "" {
		return "is not an IP address or DNS name: " + problem
	}
	return ""
}

func list[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}
