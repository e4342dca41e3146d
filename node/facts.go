package node

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"anvil.dev/anvil/internal/hostfs"
)

// Facts are what this host is like, where that changes the node's
// configuration.
type Facts struct {
	// CgroupV2 is true on a host whose cgroups are the unified hierarchy
	// only; false on v1 and hybrid hosts.
	CgroupV2 bool
	// SystemdInit is true when systemd is PID 1.
	SystemdInit bool
	// LowerOOMScore is true when processes here may lower their
	// oom_score_adj (CAP_SYS_RESOURCE in the bounding set); containerd is
	// told to keep pods' scores at its own otherwise, or no sandbox starts.
	LowerOOMScore bool
	// ResolvConf is the resolv.conf pods inherit: systemd-resolved's list
	// of real upstreams when it runs, never its 127.0.0.53 stub, which
	// would make cluster DNS forward to itself.
	ResolvConf string
	// NFT is true when the nft tool is installed: kube-proxy's nftables
	// mode runs it (the installer's preflight checks the kernel's
	// nf_tables); without it kube-proxy uses iptables.
	NFT bool
}

// ProxyMode is kube-proxy's mode on the host: nftables where it can,
// iptables otherwise (IPVS is not offered).
func (f Facts) ProxyMode() string {
	if f.NFT {
		return "nftables"
	}
	return "iptables"
}

// CgroupDriver is the kubelet's and runc's cgroup driver for the host:
// systemd where systemd manages a unified hierarchy, cgroupfs otherwise.
func (f Facts) CgroupDriver() string {
	if f.CgroupV2 && f.SystemdInit {
		return "systemd"
	}
	return "cgroupfs"
}

// ReadFacts reads the host's facts under root ("" is this machine).
func ReadFacts(root hostfs.Root) Facts {
	var f Facts
	if _, err := os.Stat(root.Path("/sys/fs/cgroup/cgroup.controllers")); err == nil {
		f.CgroupV2 = true
	}
	if comm, err := os.ReadFile(root.Path("/proc/1/comm")); err == nil {
		f.SystemdInit = strings.TrimSpace(string(comm)) == "systemd"
	}
	if b, err := os.ReadFile(root.Path("/proc/self/status")); err == nil {
		f.LowerOOMScore = hasCapability(b, capSysResource)
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if fi, err := os.Stat(root.Path(d + "/nft")); err == nil && fi.Mode().IsRegular() {
			f.NFT = true
			break
		}
	}
	f.ResolvConf = "/etc/resolv.conf"
	if b, err := os.ReadFile(root.Path("/etc/resolv.conf")); err == nil && usesStub(b) {
		if _, err := os.Stat(root.Path("/run/systemd/resolve/resolv.conf")); err == nil {
			f.ResolvConf = "/run/systemd/resolve/resolv.conf"
		}
	}
	return f
}

// capSysResource is CAP_SYS_RESOURCE's bit.
const capSysResource = 24

// hasCapability reads the CapBnd line of /proc/self/status.
func hasCapability(status []byte, bit uint) bool {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapBnd:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		return err == nil && mask&(1<<bit) != 0
	}
	return false
}

// Upstreams are the resolvers a resolv.conf names that are not on
// loopback: where the node's names are resolved, and so where cluster DNS
// forwards what is not the cluster's.
func Upstreams(resolv []byte) []string {
	var out []string
	for _, line := range strings.Split(string(resolv), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "nameserver" && !strings.HasPrefix(fields[1], "127.") && fields[1] != "::1" {
			out = append(out, fields[1])
		}
	}
	return out
}

// usesStub reports whether a resolv.conf names only loopback resolvers.
func usesStub(resolv []byte) bool {
	servers := 0
	for _, line := range strings.Split(string(resolv), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		servers++
		if !strings.HasPrefix(fields[1], "127.") && fields[1] != "::1" {
			return false
		}
	}
	return servers > 0
}
