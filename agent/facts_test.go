package agent

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"0", 1, false}, {"0-3", 4, false}, {"0-3,6", 5, false}, {"0,2,4-5", 4, false},
		{"3-1", 0, true}, {"a", 0, true}, {"0-x", 0, true},
	}
	for _, tt := range tests {
		got, err := parseCPUList(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("parseCPUList(%q) = %d, %v; want %d (error %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func TestParseCPUMax(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"max 100000\n", 0, false}, {"200000 100000\n", 2, true}, {"150000 100000", 2, true},
		{"50000 100000", 1, true}, {"", 0, false}, {"x 100000", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseCPUMax(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseCPUMax(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseMeminfo(t *testing.T) {
	m := parseMeminfo([]byte("MemTotal:       24683520 kB\nMemFree:  100 kB\nMemAvailable:   23735296 kB\nHugePages_Total:       4\nbroken line\n"))
	if m["MemTotal"] != 24683520*1024 || m["MemAvailable"] != 23735296*1024 || m["HugePages_Total"] != 4 {
		t.Errorf("meminfo: %v", m)
	}
}

func TestParseOSRelease(t *testing.T) {
	tests := []struct{ in, want string }{
		{"NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n", "Debian GNU/Linux 12 (bookworm)"},
		{"PRETTY_NAME='Alpine Linux v3.20'\n", "Alpine Linux v3.20"},
		{"PRETTY_NAME=Plain\n", "Plain"},
		{"NAME=x\n", ""},
	}
	for _, tt := range tests {
		if got := parseOSRelease([]byte(tt.in)); got != tt.want {
			t.Errorf("parseOSRelease(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHugePageSize(t *testing.T) {
	for in, want := range map[int64]string{2 << 20: "2Mi", 1 << 30: "1Gi", 64 << 10: "64Ki"} {
		if got := hugePageSize(in); got != want {
			t.Errorf("hugePageSize(%d) = %s, want %s", in, got, want)
		}
	}
}

// fakeHost lays out /proc, /sys and /etc files under a directory.
func fakeHost(t *testing.T, files map[string]string) (proc, sys, etc string) {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "proc"), filepath.Join(dir, "sys"), filepath.Join(dir, "etc")
}

func TestGatherFacts(t *testing.T) {
	base := map[string]string{
		"proc/meminfo":                                             "MemTotal: 8388608 kB\nMemAvailable: 4194304 kB\n",
		"proc/loadavg":                                             "0.10 0.20 0.30 2/345 6789\n",
		"proc/sys/kernel/pid_max":                                  "4194304\n",
		"proc/sys/kernel/random/boot_id":                           "11111111-2222-3333-4444-555555555555\n",
		"proc/sys/kernel/osrelease":                                "6.1.0-test\n",
		"sys/devices/system/cpu/online":                            "0-7\n",
		"sys/class/dmi/id/product_uuid":                            "ABCDEF00-0000-0000-0000-000000000000\n",
		"sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages":    "4\n",
		"sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages": "0\n",
		"etc/machine-id":                                           "0123456789abcdef0123456789abcdef\n",
		"etc/os-release":                                           "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
	}
	tests := []struct {
		name    string
		extra   map[string]string
		cpus    int64
		memory  int64
		avail   int64
		wantErr bool
	}{
		{"bare metal", nil, 8, 8 << 30, 4 << 30, false},
		{"a container with cgroup v2 limits", map[string]string{"sys/fs/cgroup/cpu.max": "250000 100000\n", "sys/fs/cgroup/memory.max": "2147483648\n"}, 3, 2 << 30, 0, false},
		{"a container without limits", map[string]string{"sys/fs/cgroup/cpu.max": "max 100000\n", "sys/fs/cgroup/memory.max": "max\n"}, 8, 8 << 30, 4 << 30, false},
		{"cgroup v1 limits", map[string]string{"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "100000\n", "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n", "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 1, 8 << 30, 4 << 30, false},
		{"no meminfo", map[string]string{"proc/meminfo": ""}, 8, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			for k, v := range base {
				files[k] = v
			}
			for k, v := range tt.extra {
				files[k] = v
			}
			proc, sys, etc := fakeHost(t, files)
			f, err := GatherFacts(FactsOptions{ProcDir: proc, SysDir: sys, EtcDir: etc, StoragePath: t.TempDir(), NoNetlink: true})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if f.CPUs != tt.cpus || f.MemoryBytes != tt.memory || f.MemAvailableBytes != tt.avail {
				t.Errorf("cpus %d memory %d available %d; want %d %d %d", f.CPUs, f.MemoryBytes, f.MemAvailableBytes, tt.cpus, tt.memory, tt.avail)
			}
			if tt.wantErr {
				return
			}
			if f.HugePages["hugepages-2Mi"] != 4*2<<20 || f.HugePages["hugepages-1Gi"] != 0 {
				t.Errorf("huge pages %v", f.HugePages)
			}
			if f.MachineID != "0123456789abcdef0123456789abcdef" || f.SystemUUID != "abcdef00-0000-0000-0000-000000000000" ||
				f.BootID != "11111111-2222-3333-4444-555555555555" || f.KernelVersion != "6.1.0-test" ||
				f.OSImage != "Debian GNU/Linux 12 (bookworm)" || f.PIDs != 345 || f.PIDMax != 4194304 {
				t.Errorf("facts %+v", f)
			}
			if f.StorageBytes <= 0 || f.StorageAvailableBytes <= 0 || f.RuntimeEndpoint != "" {
				t.Errorf("storage %d/%d runtime %q", f.StorageAvailableBytes, f.StorageBytes, f.RuntimeEndpoint)
			}
		})
	}
}

func TestFindRuntime(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	plain := filepath.Join(dir, "crio.sock")
	os.WriteFile(plain, nil, 0o600)
	tests := []struct {
		name    string
		sockets []string
		want    string
	}{
		{"none", []string{filepath.Join(dir, "missing.sock")}, ""},
		{"a file is not a socket", []string{plain}, ""},
		{"first socket found", []string{plain, "unix://" + sock}, sock},
	}
	for _, tt := range tests {
		if got := findRuntime(tt.sockets); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	for in, want := range map[string]string{"/run/containerd/containerd.sock": "containerd", "/run/crio/crio.sock": "cri-o", "/run/cri-dockerd.sock": "docker", "/run/x/other.sock": "other"} {
		if got := runtimeName(in); got != want {
			t.Errorf("runtimeName(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestNetFacts reads this machine's interfaces: whatever they are, the
// picked addresses are global and a nodeIP that is not local is refused.
func TestNetFacts(t *testing.T) {
	ifaces, addrs, err := netFacts(netip.Addr{})
	if err != nil {
		t.Skipf("no global address here: %v", err)
	}
	for _, a := range addrs {
		if !a.IsGlobalUnicast() {
			t.Errorf("picked %s", a)
		}
	}
	for _, i := range ifaces {
		if i.Name == "lo" {
			t.Error("loopback listed")
		}
	}
	if _, _, err := netFacts(netip.MustParseAddr("192.0.2.250")); err == nil {
		t.Error("a nodeIP that is not on this machine was accepted")
	}
	if _, got, err := netFacts(addrs[0]); err != nil || len(got) != 1 || got[0] != addrs[0] {
		t.Errorf("nodeIP %s: %v %v", addrs[0], got, err)
	}
}
