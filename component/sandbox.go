package component

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"unicode"
)

// Sandbox is how systemd confines a component's unit. The zero value
// confines it fully, so a component declared without thought is confined
// rather than trusted:
//
//   - the file system read-only (ProtectSystem=strict) except the Files the
//     Spec marks Writable (ReadWritePaths=), which must exist when the unit
//     starts; home directories hidden, /tmp and /dev private;
//   - no capabilities but the Spec's Capabilities, and CAP_NET_BIND_SERVICE
//     when it declares a port below 1024 (CapabilityBoundingSet=), and no
//     way to gain more (NoNewPrivileges=, RestrictSUIDSGID=);
//   - kernel tunables, modules, logs, the clock, the hostname and the
//     cgroup tree out of reach; system calls limited to @system-service,
//     native ones only, sockets to AF_UNIX, AF_INET, AF_INET6 and
//     AF_NETLINK (Go's net package lists interfaces over netlink);
//   - files it creates readable by root alone (UMask=0077).
//
// Each field loosens one of these for a reason its declaration gives. The
// other forms ignore the sandbox: a static pod is confined by its
// container, and the process layout runs without systemd.
type Sandbox struct {
	// Unconfined leaves the unit all of root's privileges, for the
	// components that manage the machine itself: mounts, cgroups,
	// namespaces and the firewall (containerd, the kubelet, kube-proxy).
	// The declaration says why.
	Unconfined bool
	// Sysctls lets the component write kernel tunables under /proc/sys
	// (the agent turns on IP forwarding for the pod network).
	Sysctls bool
	// PacketSockets lets the component open AF_PACKET sockets (the VIP
	// manager announces its address with gratuitous ARP).
	PacketSockets bool
}

// sandboxOptions are the [Service] settings that confine c, in a fixed
// order; none for an unconfined component.
func sandboxOptions(c Spec) ([][2]string, error) {
	var writable []string
	for _, f := range c.Files {
		if f.Writable {
			writable = append(writable, f.Path)
		}
	}
	var caps []string
	for _, x := range c.Capabilities {
		caps = append(caps, "CAP_"+x)
	}
	for _, p := range c.Ports {
		if p.Number > 0 && p.Number < 1024 {
			caps = append(caps, "CAP_NET_BIND_SERVICE")
			break
		}
	}
	o, err := confine(c.Sandbox, writable, caps)
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", c.Name, err)
	}
	return o, nil
}

// confine renders sandbox for a program that writes the paths in
// writable and keeps the capabilities caps (as systemd names them).
func confine(sandbox Sandbox, writable, caps []string) ([][2]string, error) {
	if sandbox.Unconfined {
		return nil, nil
	}
	rw, err := readWritePaths(writable)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	add := func(name, value string) { out = append(out, [2]string{name, value}) }

	add("NoNewPrivileges", "yes")
	add("ProtectSystem", "strict")
	if len(rw) > 0 {
		words := make([]string, len(rw))
		for i, p := range rw {
			words[i] = quoteWord(p)
		}
		add("ReadWritePaths", strings.Join(words, " "))
	}
	// A path the program writes under a home directory (or /tmp) must
	// stay the host's: systemd drops a ReadWritePaths= inside an
	// inaccessible /home, and a private /tmp would swallow the writes.
	if under(rw, "/home", "/root", "/run/user") {
		add("ProtectHome", "read-only")
	} else {
		add("ProtectHome", "yes")
	}
	if !under(rw, "/tmp", "/var/tmp") {
		add("PrivateTmp", "yes")
	}
	add("PrivateDevices", "yes")
	add("PrivateMounts", "yes")
	if !sandbox.Sysctls {
		add("ProtectKernelTunables", "yes")
	}
	add("ProtectKernelModules", "yes")
	add("ProtectKernelLogs", "yes")
	add("ProtectControlGroups", "yes")
	add("ProtectClock", "yes")
	add("ProtectHostname", "yes")
	add("RestrictSUIDSGID", "yes")
	add("RestrictRealtime", "yes")
	add("RestrictNamespaces", "yes")
	add("LockPersonality", "yes")
	// Go's runtime and the programs the components run map no memory both
	// writable and executable.
	add("MemoryDenyWriteExecute", "yes")
	add("SystemCallArchitectures", "native")
	// EPERM rather than a kill: a refused call shows as an error the
	// component logs, not as a crash loop. @system-service keeps what the
	// components need (chown of its own files included: the apiserver's
	// audit log rotation copies the owner).
	add("SystemCallFilter", "@system-service")
	add("SystemCallErrorNumber", "EPERM")
	families := "AF_UNIX AF_INET AF_INET6 AF_NETLINK"
	if sandbox.PacketSockets {
		families += " AF_PACKET"
	}
	add("RestrictAddressFamilies", families)
	// Empty is a setting too: no capability at all.
	caps = slices.Clone(caps)
	slices.Sort(caps)
	add("CapabilityBoundingSet", strings.Join(slices.Compact(caps), " "))
	add("UMask", "0077")
	return out, nil
}

// readWritePaths are the paths in writable, cleaned, without those inside
// another one, sorted.
func readWritePaths(writable []string) ([]string, error) {
	var out []string
	for _, p := range writable {
		if !path.IsAbs(p) || strings.ContainsFunc(p, unicode.IsControl) {
			return nil, fmt.Errorf("writable path %q is not an absolute path of printable characters", p)
		}
		out = append(out, path.Clean(p))
	}
	slices.Sort(out)
	all := slices.Compact(out)
	return slices.DeleteFunc(slices.Clone(all), func(p string) bool {
		return slices.ContainsFunc(all, func(d string) bool { return strings.HasPrefix(p, d+"/") })
	}), nil
}

// under reports whether one of paths is dir or below one of dirs.
func under(paths []string, dirs ...string) bool {
	return slices.ContainsFunc(paths, func(p string) bool {
		return slices.ContainsFunc(dirs, func(d string) bool { return p == d || strings.HasPrefix(p, d+"/") })
	})
}

// validCapability accepts a capability as Kubernetes writes it: NET_ADMIN,
// without CAP_.
func validCapability(s string) bool {
	if s == "" || strings.HasPrefix(s, "CAP_") {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
