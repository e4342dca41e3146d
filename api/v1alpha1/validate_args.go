package v1alpha1

import (
	"maps"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
)

// A weakening is an extra argument value that leaves the control plane
// less safe than anvil builds it. Validate refuses one unless the
// component's allowInsecure names its flag: the operator has then said, in
// the file where reviewers read it, that the weakening is meant. This is
// checked here rather than when the flags are merged on a master, so that
// `anvil config validate` says it before anything is changed.
type weakening struct {
	flag string
	// in lists the components (their keys under components) the rule is
	// about; empty means every one.
	in      []string
	weakens func(value string) bool
	// why is what the value gives away.
	why string
	// managed flags are never let through: anvil manages what they
	// control another way, and the component would refuse both.
	managed bool
}

// The keys of the components under components, as validation names them.
const (
	keyAPIServer         = "apiServer"
	keyControllerManager = "controllerManager"
	keyScheduler         = "scheduler"
)

// weakenings is every weakening Validate knows, in the order it reports
// them. Each mirrors a secure default declared in package master.
func weakenings() []weakening {
	return []weakening{
		{flag: "authorization-mode", in: []string{keyAPIServer}, weakens: listHas("AlwaysAllow"),
			why: "AlwaysAllow lets every authenticated client (any node, any service account) do anything, whatever RBAC says"},
		{flag: "anonymous-auth", in: []string{keyAPIServer}, weakens: isTrue, managed: true,
			why: "anvil's authentication config already admits anonymous requests to the health endpoints and cluster-info only, and the apiserver refuses --anonymous-auth beside it"},
		{flag: "profiling", weakens: isTrue,
			why: "it serves /debug/pprof, which shows the component's internals and costs it CPU"},
		{flag: "bind-address", in: []string{keyControllerManager, keyScheduler}, weakens: notLoopback,
			why: "the component would serve its health, metrics and debug endpoints beyond this machine; anvil binds them to 127.0.0.1"},
		{flag: "tls-min-version", weakens: belowTLS12,
			why: "TLS 1.0 and 1.1 are deprecated (RFC 8996); anvil's components accept TLS 1.2 and later"},
		{flag: "audit-log-path", in: []string{keyAPIServer}, weakens: discardsAuditLog,
			why: "the apiserver would keep no audit log, and who did what would be lost"},
		{flag: "audit-policy-file", in: []string{keyAPIServer}, weakens: isBlank,
			why: "without a policy the apiserver audits nothing"},
	}
}

// weakeningsOf are the weakenings of the component key, by flag.
func weakeningsOf(key string) map[string]weakening {
	out := map[string]weakening{}
	for _, w := range weakenings() {
		if len(w.in) == 0 || slices.Contains(w.in, key) {
			out[w.flag] = w
		}
	}
	return out
}

// allowable lists the flags allowInsecure of the component key may name.
func allowable(rules map[string]weakening) []string {
	var out []string
	for _, f := range slices.Sorted(maps.Keys(rules)) {
		if !rules[f].managed {
			out = append(out, f)
		}
	}
	return out
}

// insecure refuses the extra arguments of c (at the path at, whose key
// under components is key) that weaken the control plane and that
// allowInsecure does not name, and checks allowInsecure's own entries.
func (v *validator) insecure(at, key string, c Component) {
	rules := weakeningsOf(key)
	allowPath := fieldPath(at, "allowInsecure")
	argsPath := fieldPath(at, "extraArgs")
	allowed := map[string]bool{}
	for i, name := range c.AllowInsecure {
		p := indexPath(allowPath, i)
		w, known := rules[name]
		value, set := c.ExtraArgs[name]
		switch {
		case allowed[name]:
			v.errorf(p, ReasonDuplicate, "%q is listed twice", name)
		case !known:
			v.errorf(p, ReasonNotSupported, "%q is not a flag anvil refuses for %s: allowInsecure takes %s", name, key, strings.Join(allowable(rules), ", "))
		case w.managed:
			v.errorf(p, ReasonNotSupported, "--%s cannot be allowed: %s", name, w.why)
		case !set || !w.weakens(value):
			v.warnf(p, "allows nothing: %s.%s does not weaken --%s; remove it", argsPath, name, name)
		}
		allowed[name] = true
	}
	for _, flag := range slices.Sorted(maps.Keys(c.ExtraArgs)) {
		w, ok := rules[flag]
		value := c.ExtraArgs[flag]
		if !ok || !w.weakens(value) {
			continue
		}
		p := keyPath(argsPath, flag)
		switch {
		case w.managed:
			v.errorf(p, ReasonInvalid, "--%s=%s is refused: %s", flag, value, w.why)
		case !allowed[flag]:
			v.errorf(p, ReasonInvalid, "--%s=%s weakens the control plane: %s; if that is meant, list %q in %s", flag, value, w.why, flag, allowPath)
		}
	}
}

func isTrue(value string) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(value))
	return err == nil && b
}

func isBlank(value string) bool { return strings.TrimSpace(value) == "" }

// listHas matches a comma-separated list holding mode, in any case.
func listHas(mode string) func(string) bool {
	return func(value string) bool {
		for m := range strings.SplitSeq(value, ",") {
			if strings.EqualFold(strings.TrimSpace(m), mode) {
				return true
			}
		}
		return false
	}
}

// notLoopback matches what makes a component listen beyond the machine:
// empty (every address, as upstream reads it) or an address that is not
// loopback. What is no address at all the component refuses by itself.
func notLoopback(value string) bool {
	value = strings.TrimSpace(value)
	if value == "" {
		return true
	}
	a, err := netip.ParseAddr(value)
	return err == nil && !a.Unmap().IsLoopback()
}

func belowTLS12(value string) bool {
	switch strings.TrimSpace(value) {
	case "VersionTLS10", "VersionTLS11":
		return true
	}
	return false
}

// discardsAuditLog matches an audit-log-path that keeps no log: empty
// turns the log off, /dev/null throws it away. "-" (standard output) keeps
// it, in the journal or the pod's log.
func discardsAuditLog(value string) bool {
	value = strings.TrimSpace(value)
	return value == "" || path.Clean(value) == "/dev/null"
}
