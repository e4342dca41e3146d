package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Facts are what the agent reports about its machine. Everything is read
// from the kernel: /proc, /sys (cgroups included), netlink, statfs.
type Facts struct {
	// Addresses are the node's InternalIPs, IPv4 first.
	Addresses  []netip.Addr
	Interfaces []Interface

	// CPUs is the number of CPUs the node may use: the online CPUs, capped
	// by the cgroup's cpu.max when the machine is itself a container.
	CPUs int64
	// MemoryBytes is MemTotal, capped by the cgroup's memory.max.
	MemoryBytes       int64
	MemAvailableBytes int64
	// HugePages is the reserved huge-page memory by resource name
	// ("hugepages-2Mi"), in bytes.
	HugePages map[string]int64
	// StorageBytes and StorageAvailableBytes describe the filesystem of
	// the ephemeral-storage path.
	StorageBytes          int64
	StorageAvailableBytes int64
	// PIDs in use and the most the kernel allows.
	PIDs, PIDMax int64

	MachineID     string
	SystemUUID    string
	BootID        string
	KernelVersion string
	OSImage       string
	OS            string
	Architecture  string
	// RuntimeEndpoint is the container runtime socket found, "" for none.
	RuntimeEndpoint string
}

// Interface is one network interface, as the node annotation lists it.
type Interface struct {
	Name      string   `json:"name"`
	MAC       string   `json:"mac,omitempty"`
	MTU       int      `json:"mtu"`
	Up        bool     `json:"up"`
	Addresses []string `json:"addresses,omitempty"`
}

// FactsOptions say where facts are read from.
type FactsOptions struct {
	// ProcDir, SysDir and EtcDir are /proc, /sys and /etc unless a test
	// points them at fixtures.
	ProcDir, SysDir, EtcDir string
	// NodeIP, when valid, is the only InternalIP; it must be an address of
	// this machine.
	NodeIP         netip.Addr
	StoragePath    string
	RuntimeSockets []string
	// NoNetlink skips addresses and interfaces (unit tests of the file
	// parsers).
	NoNetlink bool
}

func (o FactsOptions) withDefaults() FactsOptions {
	if o.ProcDir == "" {
		o.ProcDir = "/proc"
	}
	if o.SysDir == "" {
		o.SysDir = "/sys"
	}
	if o.EtcDir == "" {
		o.EtcDir = "/etc"
	}
	if o.StoragePath == "" {
		o.StoragePath = "/var/lib"
	}
	return o
}

// GatherFacts reads this machine's facts. Only what the scheduler cannot do
// without (CPUs, memory, an address) is an error when missing.
func GatherFacts(o FactsOptions) (Facts, error) {
	o = o.withDefaults()
	f := Facts{OS: runtime.GOOS, Architecture: runtime.GOARCH, HugePages: map[string]int64{}}
	var errs []error

	// CPUs: the online set, capped by a CPU quota on the cgroup root.
	cpus, err := cpuCount(o.SysDir)
	if err != nil {
		errs = append(errs, err)
	}
	if q, ok := cgroupCPULimit(o.SysDir); ok && q < cpus {
		cpus = q
	}
	f.CPUs = cpus

	mi, err := readMeminfo(filepath.Join(o.ProcDir, "meminfo"))
	if err != nil {
		errs = append(errs, err)
	}
	f.MemoryBytes, f.MemAvailableBytes = mi["MemTotal"], mi["MemAvailable"]
	if lim, ok := cgroupMemoryLimit(o.SysDir); ok && lim < f.MemoryBytes {
		f.MemAvailableBytes = max(0, f.MemAvailableBytes-(f.MemoryBytes-lim))
		f.MemoryBytes = lim
	}
	f.HugePages = hugePages(o.SysDir)

	var st unix.Statfs_t
	if err := unix.Statfs(o.StoragePath, &st); err != nil {
		errs = append(errs, fmt.Errorf("statfs %s: %w", o.StoragePath, err))
	} else {
		f.StorageBytes = int64(st.Blocks) * st.Bsize
		f.StorageAvailableBytes = int64(st.Bavail) * st.Bsize
	}

	f.PIDs = runningPIDs(o.ProcDir)
	f.PIDMax = readInt(filepath.Join(o.ProcDir, "sys/kernel/pid_max"))

	f.MachineID = readTrim(filepath.Join(o.EtcDir, "machine-id"))
	f.SystemUUID = strings.ToLower(readTrim(filepath.Join(o.SysDir, "class/dmi/id/product_uuid")))
	f.BootID = readTrim(filepath.Join(o.ProcDir, "sys/kernel/random/boot_id"))
	f.KernelVersion = readTrim(filepath.Join(o.ProcDir, "sys/kernel/osrelease"))
	f.OSImage = osImage(filepath.Join(o.EtcDir, "os-release"))
	f.RuntimeEndpoint = findRuntime(o.RuntimeSockets)

	if !o.NoNetlink {
		f.Interfaces, f.Addresses, err = netFacts(o.NodeIP)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if f.CPUs <= 0 {
		errs = append(errs, errors.New("no CPU count"))
	}
	if f.MemoryBytes <= 0 {
		errs = append(errs, errors.New("no memory size"))
	}
	return f, errors.Join(errs...)
}

// cpuCount counts the online CPUs (/sys/devices/system/cpu/online, a list
// like "0-3,6").
func cpuCount(sysDir string) (int64, error) {
	p := filepath.Join(sysDir, "devices/system/cpu/online")
	b, err := os.ReadFile(p)
	if err != nil {
		return int64(runtime.NumCPU()), nil
	}
	n, err := parseCPUList(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return n, nil
}

func parseCPUList(s string) (int64, error) {
	var n int64
	for part := range strings.SplitSeq(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseInt(lo, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("bad CPU list %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseInt(hi, 10, 32); err != nil || b < a {
				return 0, fmt.Errorf("bad CPU list %q", s)
			}
		}
		n += b - a + 1
	}
	return n, nil
}

// cgroupCPULimit is the CPU quota of the cgroup this process sees as its
// root, rounded up to whole CPUs: cgroup v2's cpu.max ("max 100000" or
// "200000 100000"), or v1's cfs quota and period.
func cgroupCPULimit(sysDir string) (int64, bool) {
	if b, err := os.ReadFile(filepath.Join(sysDir, "fs/cgroup/cpu.max")); err == nil {
		return parseCPUMax(string(b))
	}
	q := readInt(filepath.Join(sysDir, "fs/cgroup/cpu/cpu.cfs_quota_us"))
	p := readInt(filepath.Join(sysDir, "fs/cgroup/cpu/cpu.cfs_period_us"))
	if q > 0 && p > 0 {
		return int64(math.Ceil(float64(q) / float64(p))), true
	}
	return 0, false
}

func parseCPUMax(s string) (int64, bool) {
	f := strings.Fields(s)
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	q, err1 := strconv.ParseInt(f[0], 10, 64)
	p, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0, false
	}
	return int64(math.Ceil(float64(q) / float64(p))), true
}

// cgroupMemoryLimit is memory.max (v2) or memory.limit_in_bytes (v1) of
// the cgroup this process sees as its root, when it is a real limit.
func cgroupMemoryLimit(sysDir string) (int64, bool) {
	for _, p := range []string{"fs/cgroup/memory.max", "fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(filepath.Join(sysDir, p))
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, false
		}
		v, err := strconv.ParseInt(s, 10, 64)
		// v1 says "no limit" with a huge page-rounded number.
		if err != nil || v <= 0 || v >= math.MaxInt64/2 {
			return 0, false
		}
		return v, true
	}
	return 0, false
}

// readMeminfo parses /proc/meminfo into bytes.
func readMeminfo(path string) (map[string]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseMeminfo(b), nil
}

func parseMeminfo(b []byte) map[string]int64 {
	out := map[string]int64{}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		key, rest, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			v *= 1024
		}
		out[key] = v
	}
	return out
}

// hugePages reads the reserved huge pages of each size.
func hugePages(sysDir string) map[string]int64 {
	out := map[string]int64{}
	dirs, _ := filepath.Glob(filepath.Join(sysDir, "kernel/mm/hugepages/hugepages-*kB"))
	for _, d := range dirs {
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(d), "hugepages-"), "kB"), 10, 64)
		if err != nil || kb <= 0 {
			continue
		}
		n := readInt(filepath.Join(d, "nr_hugepages"))
		out["hugepages-"+hugePageSize(kb*1024)] = n * kb * 1024
	}
	return out
}

// hugePageSize names a page size as Kubernetes resource names do: 2Mi, 1Gi.
func hugePageSize(bytes int64) string {
	switch {
	case bytes%(1<<30) == 0:
		return strconv.FormatInt(bytes>>30, 10) + "Gi"
	case bytes%(1<<20) == 0:
		return strconv.FormatInt(bytes>>20, 10) + "Mi"
	default:
		return strconv.FormatInt(bytes>>10, 10) + "Ki"
	}
}

// runningPIDs counts processes and threads (/proc/loadavg's "n/total").
func runningPIDs(procDir string) int64 {
	f := strings.Fields(readTrim(filepath.Join(procDir, "loadavg")))
	if len(f) < 4 {
		return 0
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0
	}
	n, _ := strconv.ParseInt(total, 10, 64)
	return n
}

// osImage is os-release's PRETTY_NAME.
func osImage(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return parseOSRelease(b)
}

func parseOSRelease(b []byte) string {
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "PRETTY_NAME="); ok {
			if uq, err := strconv.Unquote(v); err == nil {
				return uq
			}
			return strings.Trim(v, `'"`)
		}
	}
	return ""
}

// findRuntime is the first runtime socket that exists.
func findRuntime(sockets []string) string {
	for _, s := range sockets {
		p := strings.TrimPrefix(s, "unix://")
		if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return p
		}
	}
	return ""
}

// runtimeName is how containerRuntimeVersion names a runtime socket.
func runtimeName(socket string) string {
	switch base := filepath.Base(socket); {
	case strings.Contains(base, "containerd"):
		return "containerd"
	case strings.Contains(base, "crio"):
		return "cri-o"
	case strings.Contains(base, "docker"):
		return "docker"
	default:
		return strings.TrimSuffix(base, ".sock")
	}
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(path string) int64 {
	v, _ := strconv.ParseInt(readTrim(path), 10, 64)
	return v
}

// netFacts lists the interfaces through netlink and picks the InternalIPs:
// nodeIP when given (it must be local), else the global addresses of the
// interface holding the default route, one per family, IPv4 first.
func netFacts(nodeIP netip.Addr) ([]Interface, []netip.Addr, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("list interfaces: %w", err)
	}
	var ifaces []Interface
	byIndex := map[int][]netip.Addr{}
	var all []netip.Addr
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		it := Interface{Name: a.Name, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
		if len(a.HardwareAddr) > 0 {
			it.MAC = a.HardwareAddr.String()
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, nil, fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			ip, ok := netip.AddrFromSlice(ad.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			ones, _ := ad.Mask.Size()
			it.Addresses = append(it.Addresses, netip.PrefixFrom(ip, ones).String())
			if ip.IsGlobalUnicast() {
				byIndex[a.Index] = append(byIndex[a.Index], ip)
				all = append(all, ip)
			}
		}
		ifaces = append(ifaces, it)
	}
	if nodeIP.IsValid() {
		if !slices.Contains(all, nodeIP) {
			return ifaces, nil, fmt.Errorf("nodeIP %s is not an address of this machine (it has %v)", nodeIP, all)
		}
		return ifaces, []netip.Addr{nodeIP}, nil
	}
	var picked []netip.Addr
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return ifaces, nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			if ip, ok := firstOfFamily(byIndex[r.LinkIndex], family == netlink.FAMILY_V4); ok {
				picked = append(picked, ip)
				break
			}
		}
	}
	if len(picked) == 0 {
		// No default route (an isolated lab network): the first global
		// address of any interface.
		if ip, ok := firstOfFamily(all, true); ok {
			picked = append(picked, ip)
		} else if ip, ok := firstOfFamily(all, false); ok {
			picked = append(picked, ip)
		}
	}
	if len(picked) == 0 {
		return ifaces, nil, errors.New("this machine has no global unicast address to report; set nodeIP")
	}
	return ifaces, picked, nil
}

func firstOfFamily(addrs []netip.Addr, v4 bool) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}
