package component

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrProtectedFlag is wrapped by a FlagError for a flag anvil manages.
var ErrProtectedFlag = errors.New("anvil manages this flag")

// FlagError is an extra argument MergeArgs refused.
type FlagError struct {
	Component string
	Flag      string
	Reason    string
	protected bool
}

func (e *FlagError) Error() string {
	return fmt.Sprintf("%s: extra argument --%s: %s", e.Component, e.Flag, e.Reason)
}

// Unwrap makes errors.Is(err, ErrProtectedFlag) true for protected flags.
func (e *FlagError) Unwrap() error {
	if e.protected {
		return ErrProtectedFlag
	}
	return nil
}

// MergeArgs applies an operator's extra arguments (flag name without the
// leading dashes → value) to a component's declared flags:
//   - a declared flag keeps its place and takes the new value (a flag
//     declared several times becomes one);
//   - a new flag is appended, new flags sorted by name;
//   - a protected flag (see ProtectedFlag) is refused with a *FlagError.
//
// So the result is deterministic whatever order the map iterates in, and
// reads as "anvil's flags, then the operator's".
func MergeArgs(component string, declared []Arg, extra map[string]string) ([]Arg, error) {
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	slices.Sort(names)

	var errs []error
	for _, n := range names {
		if err := checkFlagName(n); err != nil {
			errs = append(errs, &FlagError{Component: component, Flag: n, Reason: err.Error()})
			continue
		}
		if err := checkValue(extra[n]); err != nil {
			errs = append(errs, &FlagError{Component: component, Flag: n, Reason: err.Error()})
			continue
		}
		if why, ok := ProtectedFlag(n); ok {
			errs = append(errs, &FlagError{Component: component, Flag: n, protected: true,
				Reason: "cannot be set or changed: anvil manages " + why})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	out := make([]Arg, 0, len(declared)+len(extra))
	seen := map[string]bool{}
	for _, a := range declared {
		v, changed := extra[a.Name]
		switch {
		case !changed:
			out = append(out, a)
		case !seen[a.Name]:
			out = append(out, Arg{Name: a.Name, Value: v})
		}
		seen[a.Name] = true
	}
	for _, n := range names {
		if !seen[n] {
			out = append(out, Arg{Name: n, Value: extra[n]})
		}
	}
	return out, nil
}

// ProtectedFlag reports whether an operator may not set flag name, and what
// anvil manages through it. These flags point at the certificates, keys and
// CAs anvil issues and renews, at the encryption and authentication
// configuration it writes, at the kubeconfigs holding credentials and at the
// etcd members; changing one would either break the control plane or
// silently weaken it (a CA swapped for another trusts other clients).
func ProtectedFlag(name string) (why string, protected bool) {
	n := strings.ToLower(name)
	switch {
	case strings.HasPrefix(n, "etcd-servers"):
		return "the etcd endpoints", true
	case strings.HasPrefix(n, "encryption-provider"):
		return "encryption at rest", true
	case n == "authentication-config" || n == "anonymous-auth":
		// --anonymous-auth would conflict with the authentication config,
		// which already limits anonymous access to the health endpoints.
		return "authentication", true
	case n == "kubeconfig" || strings.HasSuffix(n, "-kubeconfig"):
		return "the kubeconfigs, which hold credentials", true
	case n == "config":
		// The scheduler's config file names its kubeconfig and turns
		// profiling off.
		return "the component's configuration file", true
	case strings.Contains(n, "ca-file") || strings.Contains(n, "cafile") ||
		strings.Contains(n, "certificate-authority"):
		return "certificate authorities", true
	case strings.Contains(n, "cert"):
		return "certificates", true
	case strings.Contains(n, "key-file") || strings.Contains(n, "keyfile") ||
		strings.HasSuffix(n, "-key") || strings.Contains(n, "private-key"):
		return "keys", true
	}
	return "", false
}

// checkFlagName accepts the flag names Kubernetes components use.
func checkFlagName(n string) error {
	if strings.HasPrefix(n, "-") {
		return errors.New("write the flag name without the leading dashes")
	}
	if n == "" {
		return errors.New("empty flag name")
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("flag name has a %q: use letters, digits, dashes, dots and underscores", r)
		}
	}
	return nil
}
