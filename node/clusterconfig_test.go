package node

import (
	"net/netip"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
)

func TestClusterConfigRoundTrip(t *testing.T) {
	cc := ClusterConfigOf(testCluster())
	cm, err := cc.ConfigMap()
	if err != nil {
		t.Fatal(err)
	}
	if cm.Namespace != "kube-system" || cm.Name != "anvil-node-config" {
		t.Fatalf("published as %s/%s", cm.Namespace, cm.Name)
	}
	got, err := ParseClusterConfigMap(cm)
	if err != nil {
		t.Fatal(err)
	}
	if got != cc {
		t.Fatalf("round trip: %+v, want %+v", got, cc)
	}
	c := got.Cluster()
	p, err := Plan{Cluster: c, Host: v1alpha1.Host{Name: "w1", Address: netip.MustParseAddr("10.0.0.9")}}.Complete()
	if err != nil {
		t.Fatalf("a plan from the published settings: %v", err)
	}
	if _, err := ConfigFiles(p); err != nil {
		t.Fatalf("config files from the published settings: %v", err)
	}
}

func TestClusterConfigRefused(t *testing.T) {
	good := ClusterConfigOf(testCluster())
	for _, tt := range []struct {
		name string
		edit func(*ClusterConfig)
		want string
	}{
		{"unknown version", func(c *ClusterConfig) { c.KubernetesVersion = "v1.2.3" }, "kubernetesVersion"},
		{"no pod CIDR", func(c *ClusterConfig) { c.PodCIDR = netip.Prefix{} }, "podCIDR: missing"},
		{"overlap", func(c *ClusterConfig) { c.PodCIDR = c.ServiceCIDR }, "overlaps"},
		{"tiny service CIDR", func(c *ClusterConfig) { c.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/31") }, "serviceCIDR"},
		{"network", func(c *ClusterConfig) { c.Network = "flannel" }, `"flannel"`},
		{"domain", func(c *ClusterConfig) { c.ClusterDomain = "" }, "clusterDomain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cc := good
			tt.edit(&cc)
			if _, err := cc.ConfigMap(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ConfigMap: %v, want an error with %q", err, tt.want)
			}
		})
	}
	cm, _ := good.ConfigMap()
	cm.Data[ClusterConfigKey] += "extra: 1\n"
	if _, err := ParseClusterConfigMap(cm); err == nil || !strings.Contains(err.Error(), "extra") {
		t.Fatalf("unknown field: %v", err)
	}
	delete(cm.Data, ClusterConfigKey)
	if _, err := ParseClusterConfigMap(cm); err == nil || !strings.Contains(err.Error(), "config.yaml") {
		t.Fatalf("missing key: %v", err)
	}
}

// The reader role grants get on that one ConfigMap to bootstrap tokens
// and nodes, and nothing else.
func TestClusterConfigRBAC(t *testing.T) {
	role, binding := ClusterConfigRBAC()
	if len(role.Rules) != 1 {
		t.Fatalf("rules: %+v", role.Rules)
	}
	r := role.Rules[0]
	if strings.Join(r.Verbs, ",") != "get" || strings.Join(r.ResourceNames, ",") != ClusterConfigMap || strings.Join(r.Resources, ",") != "configmaps" {
		t.Fatalf("rule grants %+v", r)
	}
	var groups []string
	for _, s := range binding.Subjects {
		groups = append(groups, s.Kind+":"+s.Name)
	}
	if strings.Join(groups, ",") != "Group:system:bootstrappers,Group:system:nodes" {
		t.Fatalf("subjects %v", groups)
	}
	if binding.RoleRef.Name != role.Name || binding.Namespace != "kube-system" {
		t.Fatalf("binding %+v", binding)
	}
}
