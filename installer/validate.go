package installer

import (
	"context"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/node"
)

// Phase validate: judge the facts before anything changes. Per host: the
// architecture, systemd, the node address, free ports, what it already is;
// across hosts: duplicate hostnames, machine IDs and addresses, clock
// skew. A host with problems fails here and is left alone; the others go
// on. It also picks the primary: the master the others join.

// Clock skew limits, against the workstation: beyond maxSkew certificates
// issued on one machine are not yet (or no longer) valid on another and
// leases expire early; beyond warnSkew it is worth fixing NTP.
const (
	maxSkew  = 30 * time.Second
	warnSkew = 2 * time.Second
)

// verdict is what validation found on one host.
type verdict struct {
	problems []string
	warnings []string
}

func (v *verdict) problem(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

func (v *verdict) warn(format string, args ...any) {
	v.warnings = append(v.warnings, fmt.Sprintf(format, args...))
}

func planValidate(r *run) plan {
	verdicts := validateFacts(r.cluster, r.apply.bundle, r.alive(), r.apply.o.Rollback)
	r.primary = pickPrimary(r.cluster, r.hosts)
	var pl plan
	for _, h := range r.alive() {
		v := verdicts[h]
		pl.steps = append(pl.steps, step{host: h, do: "check the architecture, systemd, addresses, ports, clock and what the host already is", run: func(context.Context) (string, error) {
			for _, w := range v.warnings {
				h.task.Say("warning: %s", w)
			}
			if len(v.problems) > 0 {
				return "", &ValidationError{Host: h.Name, Problems: v.problems}
			}
			if len(v.warnings) > 0 {
				return fmt.Sprintf("%d warnings", len(v.warnings)), nil
			}
			return "", nil
		}})
	}
	return pl
}

// ValidationError lists what makes a host unfit for what the cluster file
// asks of it.
type ValidationError struct {
	Host     string
	Problems []string
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0]
	}
	return fmt.Sprintf("%d problems:\n    %s", len(e.Problems), strings.Join(e.Problems, "\n    "))
}

// pickPrimary is the master the others join: the first master that
// already is a control plane; else the first master, when every master is
// known not to be one. When a master could not be looked at, none is
// picked: initialising another could split the cluster in two.
func pickPrimary(c *v1alpha1.Cluster, hosts []*host) *host {
	var masters []*host
	for _, h := range hosts {
		if h.IsMaster() {
			masters = append(masters, h)
		}
	}
	for _, h := range masters {
		if !h.failed() && h.facts != nil && h.facts.ControlPlane() {
			return h
		}
	}
	for _, h := range masters {
		if h.failed() || h.facts == nil {
			return nil
		}
	}
	if len(masters) == 0 {
		return nil
	}
	return masters[0]
}

// requiredPorts are what host h needs free: the ports its components
// declare, with the node stack's when it runs pods.
func requiredPorts(c *v1alpha1.Cluster, h v1alpha1.Host) ([]master.Listener, error) {
	cc := c.Defaulted()
	p, err := master.NewPlan(cc, h.Name, "")
	if err != nil {
		return nil, err
	}
	out, err := master.NodePorts(p, c.ControlPlane.Layout)
	if err != nil || !runsPods(h) {
		return out, err
	}
	pods, err := podPorts(cc, p.Node)
	return append(out, pods...), err
}

// podPorts are the ports of the node stack a host that runs pods starts:
// the kubelet's and kube-proxy's, read off their declarations
// (node.Components).
func podPorts(c *v1alpha1.Cluster, h v1alpha1.Host) ([]master.Listener, error) {
	cs, err := node.Components(node.Plan{Cluster: c, Host: h})
	if err != nil {
		return nil, err
	}
	var out []master.Listener
	for _, s := range cs {
		for _, port := range s.Ports {
			out = append(out, master.Listener{Component: s.Name, Name: port.Name, Address: port.Address, Port: port.Number})
		}
	}
	return out, nil
}

// ownedPrograms are the programs anvil runs on a host of c: the control
// plane's and the agent's, and the node stack's.
func ownedPrograms(c *v1alpha1.Cluster, h v1alpha1.Host) []string {
	out := master.OwnedPrograms()
	if cs, err := node.Components(node.Plan{Cluster: c.Defaulted(), Host: h}); err == nil {
		for _, s := range cs {
			out = append(out, path.Base(s.Binary))
		}
	}
	return out
}

// ours reports whether process is one of programs: a port it holds on a
// host with leftovers of an interrupted run is the run's own. ss shows
// the kernel's 15-byte comm ("kube-controller").
func ours(programs []string, process string) bool {
	return slices.ContainsFunc(programs, func(p string) bool {
		return process == p[:min(len(p), 15)]
	})
}

// validateKernel checks that the kernel of a host that runs pods has what
// containerd, kube-proxy and the pod network need. A module the kernel
// loads on first use is enough; br_netfilter, which nothing loads by
// itself, has to be loaded already.
func validateKernel(h *host, v *verdict) {
	ks := h.facts.KernelSupport
	if ks == nil || !runsPods(h.Host) {
		return
	}
	for _, f := range kernelFeatures() {
		switch ks[f.module] {
		case KernelLoaded:
		case KernelModule:
			if !f.autoloads {
				v.problem("its kernel has %s as a module that is not loaded (%s needs it): load it (modprobe %s) and list it in /etc/modules-load.d/ so it is loaded at boot", f.module, f.neededBy, f.module)
			}
		case KernelAbsent:
			v.problem("its kernel %s lacks %s (CONFIG_%s), which %s needs: use a kernel that has it", orUnknown(h.facts.Kernel), f.module, f.config, f.neededBy)
		default:
			v.warn("whether its kernel has %s (%s needs it) is unknown: neither /sys/module, /lib/modules nor the kernel's config told", f.module, f.neededBy)
		}
	}
}

// validateFacts judges every host's facts.
func validateFacts(c *v1alpha1.Cluster, b *bundle, hosts []*host, rollback bool) map[*host]*verdict {
	out := map[*host]*verdict{}
	for _, h := range hosts {
		v := &verdict{}
		out[h] = v
		f := h.facts
		if f == nil {
			continue
		}
		if b != nil && f.Arch != b.arch {
			v.problem("the host is %s, but the binaries are built for %s", orUnknown(f.Arch), b.arch)
		}
		switch f.Systemd {
		case "running", "degraded":
		case "starting", "initializing":
			v.warn("systemd is still %s", f.Systemd)
		default:
			v.problem("systemd is not running (systemctl is-system-running: %s): anvil runs its components as systemd units", orUnknown(f.Systemd))
		}
		if f.OSID != "" && f.OSID != "debian" && f.OSID != "ubuntu" {
			v.warn("%s is not a system anvil is tested on (Debian, Ubuntu)", f.OS)
		}
		if addr := h.NodeAddress(); len(f.Addresses) > 0 && !slices.Contains(f.Addresses, addr) {
			v.problem("its address %s is on none of its interfaces (it has %s): set internalAddress to the one cluster traffic should use", addr, joinAddrs(f.Addresses))
		}
		validateMembership(c, h, v, rollback)
		if !f.Member() {
			validatePorts(c, h, v)
		}
		validateKernel(h, v)
		if b != nil {
			validatePayload(b, h, v)
		}
		skew := f.ClockSkew.Abs() - f.ClockUncertainty
		switch {
		case skew > maxSkew:
			v.problem("its clock is %s %s the workstation's (more than %s): fix NTP first, certificates and leases depend on it", f.ClockSkew.Abs().Round(time.Second), aheadBehind(f.ClockSkew), maxSkew)
		case skew > warnSkew:
			v.warn("its clock is %s %s the workstation's", f.ClockSkew.Abs().Round(time.Millisecond), aheadBehind(f.ClockSkew))
		}
	}
	duplicates(hosts, out, "hostname", func(f *Facts) []string { return []string{strings.ToLower(f.Hostname)} })
	duplicates(hosts, out, "machine ID", func(f *Facts) []string { return []string{f.MachineID} })
	duplicates(hosts, out, "address", func(f *Facts) []string {
		var s []string
		for _, a := range f.Addresses {
			// The VIP moves between masters; it is not a duplicate.
			if a != c.ControlPlane.VIP && !a.IsLoopback() {
				s = append(s, a.String())
			}
		}
		return s
	})
	return out
}

// validatePayload checks that what h is to get can land: the cluster
// file's image archives are all fine (a problem of every host's, since a
// run that went on without them would leave the hosts that need them
// behind), and nothing that is not anvil's is where h's links go.
func validatePayload(b *bundle, h *host, v *verdict) {
	v.problems = append(v.problems, b.archiveProblems...)
	if b.payload == nil {
		return
	}
	p, err := b.forHost(h.Host)
	if err != nil {
		v.problem("%v", err)
		return
	}
	for _, l := range p.links {
		target, ok := h.facts.Links[l.path()]
		switch {
		case !ok:
		case target == "":
			v.problem("%s is a file anvil did not install: move it away, anvil links its own there", l.path())
		case !strings.HasPrefix(target, hostfs.BinDir+"/"):
			v.problem("%s links to %s, not to anvil's: move it away, anvil links its own there", l.path(), target)
		}
	}
}

// validateMembership checks that what a host already is matches the file.
func validateMembership(c *v1alpha1.Cluster, h *host, v *verdict, rollback bool) {
	f := h.facts
	if f.Node == nil {
		return
	}
	if f.ClusterName != "" && f.ClusterName != c.Name {
		v.problem("it already belongs to cluster %q, not %q: reset it first (anvil reset)", f.ClusterName, c.Name)
	}
	if f.Node.Node != h.Name {
		v.problem("it is already node %q, not %q: reset it first, or name it %q in the cluster file", f.Node.Node, h.Name, f.Node.Node)
	}
	if f.Node.Role != h.Role {
		v.problem("it is already a %s, not a %s: changing roles needs a reset of the host first", f.Node.Role, h.Role)
	}
	if from := f.Node.KubernetesVersion; from != "" && from != c.KubernetesVersion {
		// The upgrade phase switches it (upgrade.go), if the skew policy
		// allows the move.
		if err := images.CheckUpgrade(from, c.KubernetesVersion, rollback); err != nil {
			v.problem("it runs Kubernetes %s, the file asks for %s: %v", from, c.KubernetesVersion, err)
		}
	}
	// Apply leaves a member as it is; what is unhealthy on it is worth
	// saying, not worth stopping for (anvil cluster status has the detail).
	if f.Status != nil {
		for _, comp := range f.Status.Components {
			if !comp.Healthy {
				v.warn("%s is not healthy (%s%s)", comp.Name, orUnknown(comp.State), suffixed(comp.Problem))
			}
		}
	} else if f.StatusErr != "" {
		v.warn("its health is unknown: %s", f.StatusErr)
	}
}

func suffixed(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func validatePorts(c *v1alpha1.Cluster, h *host, v *verdict) {
	f := h.facts
	interrupted := len(f.Leftovers) > 0
	ports, err := requiredPorts(c, h.Host)
	if err != nil {
		v.problem("%v", err)
		return
	}
	programs := ownedPrograms(c, h.Host)
	seen := map[uint16]bool{}
	for _, port := range ports {
		if seen[port.Port] {
			continue
		}
		seen[port.Port] = true
		for _, l := range f.Listening {
			if l.Addr.Port() != port.Port || (interrupted && ours(programs, l.Process)) {
				continue
			}
			by := ""
			if l.Process != "" {
				by = " by " + l.Process
			}
			v.problem("port %d is in use%s (listening on %s); anvil's %s needs it", port.Port, by, l.Addr, port.Component)
			break
		}
	}
}

// duplicates reports a value that two hosts share, on both.
func duplicates(hosts []*host, out map[*host]*verdict, what string, values func(*Facts) []string) {
	seen := map[string][]*host{}
	for _, h := range hosts {
		if h.facts == nil {
			continue
		}
		for _, val := range values(h.facts) {
			if val != "" {
				seen[val] = append(seen[val], h)
			}
		}
	}
	for val, hs := range seen {
		if len(hs) < 2 {
			continue
		}
		for _, h := range hs {
			var others []string
			for _, o := range hs {
				if o != h {
					others = append(others, o.Name)
				}
			}
			out[h].problem("its %s %q is also %s's: every machine needs its own (a cloned image?)", what, val, strings.Join(others, ", "))
		}
	}
}

func aheadBehind(d time.Duration) string {
	if d > 0 {
		return "ahead of"
	}
	return "behind"
}

func joinAddrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
