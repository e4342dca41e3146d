package component_test

import (
	"flag"
	"net/netip"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

// processRoot is the runtime root of the process-layout goldens: any fixed
// directory, since rendering touches nothing.
const processRoot = "/srv/anvil-node"

// testCluster is a small, fully defaulted cluster built in code, so these
// tests do not depend on the cluster-file decoder.
func testCluster() *v1alpha1.Cluster {
	return &v1alpha1.Cluster{
		APIVersion:        v1alpha1.APIVersion,
		Kind:              v1alpha1.KindCluster,
		Name:              "lab",
		KubernetesVersion: "v1.37.2",
		ControlPlane: v1alpha1.ControlPlane{
			Endpoint: "10.0.0.11", Port: 6443, Layout: v1alpha1.LayoutSystemd,
			VIP: netip.MustParseAddr("10.0.0.100"),
		},
		Hosts: []v1alpha1.Host{
			{Name: "lab-m1", Address: netip.MustParseAddr("10.0.0.11"), Role: v1alpha1.RoleMaster},
			{Name: "lab-m2", Address: netip.MustParseAddr("10.0.0.12"), Role: v1alpha1.RoleMaster},
			{Name: "lab-w1", Address: netip.MustParseAddr("10.0.0.21"), Role: v1alpha1.RoleWorker},
		},
		Networking: v1alpha1.Networking{
			ServiceCIDR:   netip.MustParsePrefix("10.96.0.0/12"),
			PodCIDR:       netip.MustParsePrefix("10.244.0.0/16"),
			ClusterDomain: "cluster.local",
		},
		Etcd: v1alpha1.Etcd{
			QuotaBackendBytes: 8 << 30,
			SnapshotCount:     10000,
			HeartbeatInterval: v1alpha1.Duration{Duration: 100 * time.Millisecond},
			ElectionTimeout:   v1alpha1.Duration{Duration: time.Second},
		},
		Components: v1alpha1.Components{
			APIServer: v1alpha1.Component{ExtraArgs: map[string]string{"v": "2"}},
		},
	}
}

// nodeComponents is every component the first master runs, the agent
// included, with paths under root (the runtime root).
func nodeComponents(t *testing.T, root hostfs.Root) []component.Spec {
	t.Helper()
	p, err := master.NewPlan(testCluster(), "lab-m1", root)
	if err != nil {
		t.Fatal(err)
	}
	// The systemd layout's list has the agent; the tests render it in every
	// form, although the static-pod layout does not run it.
	cs, err := master.NodeComponents(p, v1alpha1.LayoutSystemd)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
