package installer

import (
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
)

func readFacts(t *testing.T, name string) *Facts {
	t.Helper()
	out, err := os.ReadFile("testdata/" + name + ".stdout")
	if err != nil {
		t.Fatal(err)
	}
	errOut, err := os.ReadFile("testdata/" + name + ".stderr")
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Unix(1795442076, 0)
	f, err := parseFacts(append(out, errOut...), sent, sent.Add(40*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The testdata are the facts script's real output on two lab machines: a
// master after init and a worker after join.
func TestParseFactsMaster(t *testing.T) {
	f := readFacts(t, "facts-m1")
	if f.OS != "Debian GNU/Linux 12 (bookworm)" || f.OSID != "debian" || f.OSVersion != "12" || f.Arch != "x86_64" || f.Kernel != "6.18.44-fc-v769" {
		t.Errorf("system: %+v", f)
	}
	if f.Hostname != "ix-m1" || f.MachineID != "1237d18a89e0dc7e8e96652cc315a905" {
		t.Errorf("hostname %q, machine id %q", f.Hostname, f.MachineID)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.213.0.10")}; !slices.Equal(f.Addresses, want) {
		t.Errorf("addresses %v", f.Addresses)
	}
	if f.Systemd != "running" || f.Units["kube-apiserver.service"] != "active" || f.Units["anvil-agent.service"] != "inactive" {
		t.Errorf("systemd %q, units %v", f.Systemd, f.Units)
	}
	if !f.ControlPlane() || f.Node.Node != "ix-m1" || f.Node.Role != v1alpha1.RoleMaster || f.ClusterName != "ix" {
		t.Errorf("node %+v, cluster %q", f.Node, f.ClusterName)
	}
	if len(f.Leftovers) != 0 {
		t.Errorf("a member has no leftovers: %v", f.Leftovers)
	}
	if len(f.Installed) != 5 || f.Installed["kube-apiserver"] != "fb8676b1883fd1f580f15bc4aac7c4184f0e06b85325e7ec7b3295f14128b09b" || f.AnvilVersion != "v0.0.0-dev" {
		t.Errorf("installed %v, anvil %q", f.Installed, f.AnvilVersion)
	}
	if !strings.HasPrefix(string(f.Manifest), "{\n  \"kubernetesVersion\": \"v1.37.2\"") || !strings.HasSuffix(string(f.Manifest), "}\n") {
		t.Errorf("manifest %q", f.Manifest)
	}
	if f.Links["/usr/local/bin/kubectl"] != "/opt/anvil/bin/v1.37.2/kubectl" || len(f.Links) != 5 {
		t.Errorf("links %v", f.Links)
	}
	if f.Status == nil || f.Status.Node != "ix-m1" || len(f.Status.Components) == 0 {
		t.Errorf("status %+v (%s)", f.Status, f.StatusErr)
	}
	procs := map[uint16]string{}
	for _, l := range f.Listening {
		procs[l.Addr.Port()] = l.Process
	}
	if procs[6443] != "kube-apiserver" || procs[10257] != "kube-controller" || procs[2380] != "anvil" || procs[22] != "sshd" {
		t.Errorf("listening %v", f.Listening)
	}
	if f.ClockSkew.Abs() > 24*time.Hour || f.ClockUncertainty != 20*time.Millisecond {
		t.Errorf("skew %s ± %s", f.ClockSkew, f.ClockUncertainty)
	}
}

func TestParseFactsWorker(t *testing.T) {
	f := readFacts(t, "facts-w1")
	if f.Node != nil || !f.AgentJoined || !f.Member() || f.ControlPlane() {
		t.Errorf("a joined worker: node %+v, agent joined %v", f.Node, f.AgentJoined)
	}
	if f.Status != nil || f.StatusErr != "" {
		t.Errorf("no node.json, so no status: %+v %q", f.Status, f.StatusErr)
	}
}

func TestParseFactsNeedsTheEnd(t *testing.T) {
	if _, err := parseFacts([]byte(sectionMark+"time@@\n1\n"), time.Now(), time.Now()); err == nil {
		t.Error("output without the end marker was accepted")
	}
}

func TestParseListening(t *testing.T) {
	got := parseListening([]string{
		`LISTEN 0 4096 *:6443 *:* users:(("kube-apiserver",pid=248,fd=5))`,
		`LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:* users:(("systemd-resolve",pid=1,fd=1))`,
		`LISTEN 0 4096 [fe80::1%eth0]:8080 [::]:*`,
		"#proc",
		"  sl  local_address rem_address   st tx_queue rx_queue",
		"   0: 0100007F:0CEB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1",
		"   1: 0100007F:1F90 0200007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 2",
		"   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 0",
	})
	want := []string{"0.0.0.0:6443 kube-apiserver", "127.0.0.53:53 systemd-resolve", "[fe80::1]:8080 ", "127.0.0.1:3307 ", "[::1]:22 "}
	var have []string
	for _, l := range got {
		have = append(have, l.Addr.String()+" "+l.Process)
	}
	if !slices.Equal(have, want) {
		t.Errorf("got %q\nwant %q", have, want)
	}
}

func TestFactsScriptIsReadOnly(t *testing.T) {
	s := factsScript(factsRequest{version: "v1.37.2", files: []string{"kube-apiserver", "cni/bridge"}, archives: []string{"app.tar"}, links: map[string][]string{"/opt/cni/bin": {"bridge"}}, status: true, kernel: true})
	for _, bad := range []string{" rm ", "mkdir", " mv ", "> /", ">/etc", "chmod", "tee ", "systemctl start", "systemctl stop", "reset", "--update-cache"} {
		if strings.Contains(s, bad) {
			t.Errorf("the facts script contains %q", bad)
		}
	}
	// Outside a dry run, the hashes it computes are remembered.
	if s := factsScript(factsRequest{version: "v1.37.2", files: []string{"kube-apiserver"}, updateCache: true}); !strings.Contains(s, "--cache "+hashCacheFile+" --update-cache") {
		t.Errorf("the facts script of an apply does not keep its hashes:\n%s", s)
	}
}

func TestParseKernel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  map[string]KernelSupport
	}{
		// This machine's kind: everything built in, no module lists, the
		// config in /proc/config.gz.
		{"built in", []string{"loaded overlay", "loaded br_netfilter", "config # CONFIG_MODULES is not set", "config CONFIG_BRIDGE_NETFILTER=y", "config CONFIG_NF_TABLES=y", "config CONFIG_OVERLAY_FS=y"},
			map[string]KernelSupport{"overlay": KernelLoaded, "br_netfilter": KernelLoaded, "nf_tables": KernelLoaded}},
		// Debian after boot: modules, overlay loaded by an earlier mount.
		{"modules", []string{"loaded overlay", "modules", "module overlay", "module br_netfilter", "module nf_tables", "config CONFIG_MODULES=y", "config CONFIG_BRIDGE_NETFILTER=m"},
			map[string]KernelSupport{"overlay": KernelLoaded, "br_netfilter": KernelModule, "nf_tables": KernelModule}},
		{"lacking br_netfilter", []string{"modules", "module overlay", "module nf_tables"},
			map[string]KernelSupport{"overlay": KernelModule, "br_netfilter": KernelAbsent, "nf_tables": KernelModule}},
		{"config says no", []string{"config # CONFIG_MODULES is not set", "config CONFIG_OVERLAY_FS=y", "loaded overlay", "config CONFIG_NF_TABLES=y"},
			map[string]KernelSupport{"overlay": KernelLoaded, "br_netfilter": KernelAbsent, "nf_tables": KernelLoaded}},
		// A container without /lib/modules nor a readable config.
		{"nothing told", []string{"loaded nf_tables"},
			map[string]KernelSupport{"overlay": KernelUnknown, "br_netfilter": KernelUnknown, "nf_tables": KernelLoaded}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseKernel(tc.lines); !maps.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// The section is read only when the script had it.
	f, err := parseFacts([]byte(sectionMark+"kernel@@\nloaded overlay\n"+sectionMark+"end@@\n"), time.Now(), time.Time{})
	if err != nil || f.KernelSupport["overlay"] != KernelLoaded {
		t.Errorf("%v, %v", f.KernelSupport, err)
	}
	if f := readFacts(t, "facts-w1"); f.KernelSupport != nil {
		t.Errorf("no kernel section, yet %v", f.KernelSupport)
	}
	if s := factsScript(factsRequest{version: "v1.37.2", kernel: true}); !strings.Contains(s, "/proc/sys/net/bridge/bridge-nf-call-iptables") {
		t.Errorf("the facts script does not look at the kernel:\n%s", s)
	}
}

func TestParseEpoch(t *testing.T) {
	for in, want := range map[string]time.Time{
		"1795442076.471670866": time.Unix(1795442076, 471670866),
		"1795442076.5":         time.Unix(1795442076, 500000000),
		"1795442076":           time.Unix(1795442076, 0),
	} {
		got, err := parseEpoch(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseEpoch(%q) = %v, %v", in, got, err)
		}
	}
}
