package master

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/node"
)

// testRun is an init run of master m1 of a small cluster, whose host runs
// runtime, under a temporary root.
func testRun(t *testing.T, runtime v1alpha1.Runtime) *initRun {
	t.Helper()
	c := &v1alpha1.Cluster{
		APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindCluster, Name: "t",
		Hosts: []v1alpha1.Host{{Name: "m1", Address: netip.MustParseAddr("192.0.2.1"), Role: v1alpha1.RoleMaster, Runtime: runtime,
			Taints: []v1alpha1.Taint{{Key: "example.com/gpu", Effect: v1alpha1.NoSchedule}}}},
	}
	c.Default()
	r, err := newInitRun(InitOptions{Cluster: c, Node: "m1", Layout: v1alpha1.LayoutSystemd, Root: hostfs.Root(t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestNodePhaseOrder: the node stack comes up after the apiserver is
// reachable and before the Node is marked, in init and in control-plane
// join alike.
func TestNodePhaseOrder(t *testing.T) {
	for name, names := range map[string][]string{"init": InitPhaseNames(), "join": phaseNames(joinPhases())} {
		w, n, a, m := slices.Index(names, "wait"), slices.Index(names, "node"), slices.Index(names, "agent"), slices.Index(names, "mark-control-plane")
		if !(w >= 0 && w < n && n < a && a < m) {
			t.Errorf("%s phases %v: want wait < node < agent < mark-control-plane", name, names)
		}
	}
}

func phaseNames(ps []initPhase) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestNodePhaseRuntimeNoneDoesNothing(t *testing.T) {
	r := testRun(t, v1alpha1.RuntimeNone)
	// No CA on disk either: the phase must not even look.
	if err := nodePhase(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	var written []string
	filepath.WalkDir(string(r.o.Root), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			written = append(written, p)
		}
		return nil
	})
	if len(written) > 0 {
		t.Errorf("runtime none wrote %v", written)
	}
	cfg := r.agentConfig("https://192.0.2.1:6443")
	if cfg.Runtime != "" || cfg.Network != "" || cfg.PodCIDR.IsValid() {
		t.Errorf("runtime none: agent.yaml has runtime %q network %q podCIDR %v; want today's (none of them)", cfg.Runtime, cfg.Network, cfg.PodCIDR)
	}
	if !strings.Contains(r.nodeRegistrar(), "anvil agent") {
		t.Errorf("runtime none: waiting for %q", r.nodeRegistrar())
	}
}

func TestNodePhaseRuntimeContainerd(t *testing.T) {
	r := testRun(t, v1alpha1.RuntimeContainerd)
	p := r.nodePlan(node.Facts{CgroupV2: true, SystemdInit: true})
	if p.NodeIP != r.plan.AdvertiseAddress || p.Root != "" || p.BinDir != r.plan.BinDir {
		t.Errorf("node plan: node IP %v root %q bin %q", p.NodeIP, p.Root, p.BinDir)
	}
	want := []v1alpha1.Taint{{Key: "example.com/gpu", Effect: v1alpha1.NoSchedule}, {Key: ControlPlaneTaint, Effect: v1alpha1.NoSchedule}}
	if !slices.Equal(p.Host.Taints, want) {
		t.Errorf("kubelet registers with taints %v, want %v", p.Host.Taints, want)
	}
	if len(r.plan.Node.Taints) != 1 {
		t.Errorf("the plan's host taints changed: %v", r.plan.Node.Taints)
	}
	files, err := node.ConfigFiles(p)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(files, func(f component.OutputFile) bool { return f.Path == node.KubeletConfigFile })
	if i < 0 || !strings.Contains(string(files[i].Data), "key: "+ControlPlaneTaint) {
		t.Errorf("the KubeletConfiguration does not register the control-plane taint")
	}
	cfg := r.agentConfig("https://192.0.2.1:6443")
	if cfg.Runtime != v1alpha1.RuntimeContainerd || cfg.Network != v1alpha1.PodNetworkHostGW || cfg.PodCIDR != r.o.Cluster.Networking.PodCIDR {
		t.Errorf("agent.yaml: runtime %q network %q podCIDR %v", cfg.Runtime, cfg.Network, cfg.PodCIDR)
	}
	// What the agent phase writes is an agent.yaml the agent accepts.
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		t.Errorf("agent.yaml refused: %v", err)
	}
	if got := r.nodeRegistrar(); !strings.Contains(got, "kubelet") || !strings.Contains(got, "journalctl -u kubelet") {
		t.Errorf("waiting for %q", got)
	}
}
