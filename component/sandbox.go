package component

import (
	"fmt"
	"path"
	"slices"
	"strings"
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
	if c.Sandbox.Unconfined {
		return nil, nil
	}
	var out [][2]string
	add := func(name, value string) { out = append(out, [2]string{name, value}) }

	add("NoNewPrivileges", "yes")
	add("ProtectSystem", "strict")
	rw, err := readWritePaths(c)
	if err != nil {
		return nil, err
	}
	if len(rw) > 0 {
		add("ReadWritePaths", strings.Join(rw, " "))
	}
	add("ProtectHome", "yes")
	add("PrivateTmp", "yes")
	add("PrivateDevices", "yes")
	add("PrivateMounts", "yes")
	if !c.Sandbox.Sysctls {
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
	if c.Sandbox.PacketSockets {
		families += " AF_PACKET"
	}
	add("RestrictAddressFamilies", families)
	// Empty is a setting too: no capability at all.
	add("CapabilityBoundingSet", strings.Join(boundingSet(c), " "))
	add("UMask", "0077")
	return out, nil
}

// readWritePaths are the Files c writes, without those inside another
// one, sorted. systemd reads the list split at spaces and expands %
// specifiers, so a path holding either is refused rather than escaped.
func readWritePaths(c Spec) ([]string, error) {
	var out []string
	for _, f := range c.Files {
		if !f.Writable {
			continue
		}
		if strings.ContainsAny(f.Path, " \t\"'\\%") {
			return nil, fmt.Errorf("component %s: writable path %q holds a space, quote, backslash or %%, which ReadWritePaths= cannot carry", c.Name, f.Path)
		}
		out = append(out, path.Clean(f.Path))
	}
	slices.Sort(out)
	all := slices.Compact(out)
	return slices.DeleteFunc(slices.Clone(all), func(p string) bool {
		return slices.ContainsFunc(all, func(d string) bool { return strings.HasPrefix(p, d+"/") })
	}), nil
}

// boundingSet is c's capabilities as systemd names them, sorted.
func boundingSet(c Spec) []string {
	var out []string
	for _, x := range c.Capabilities {
		out = append(out, "CAP_"+x)
	}
	for _, p := range c.Ports {
		if p.Number > 0 && p.Number < 1024 {
			out = append(out, "CAP_NET_BIND_SERVICE")
			break
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
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
