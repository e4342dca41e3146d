package pki

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
)

func TestConfigFromCluster(t *testing.T) {
	cfg := testConfig(t, "m1")
	want := Config{
		ClusterName:          "example",
		NodeName:             "m1",
		NodeIPs:              []netip.Addr{netip.MustParseAddr("192.168.1.11"), netip.MustParseAddr("10.0.0.11")},
		ControlPlaneEndpoint: "k8s.example.com",
		VIP:                  netip.MustParseAddr("10.0.0.10"),
		ServiceCIDR:          netip.MustParsePrefix("10.96.0.0/12"),
		ClusterDomain:        "cluster.local",
		CertSANs:             []string{"api.example.com", "203.0.113.7"},
		KeyAlgorithm:         v1alpha1.ECDSAP256,
		CAValidity:           3650 * 24 * time.Hour,
		CertValidity:         365 * 24 * time.Hour,
		APIServerURL:         "https://k8s.example.com:6443",
		LocalAPIServerURL:    "https://10.0.0.11:6443",
	}
	if !configEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}

	// A bare cluster built in Go falls back to the cluster file's defaults.
	c := &v1alpha1.Cluster{
		Hosts: []v1alpha1.Host{{Name: "a", Address: netip.MustParseAddr("fd00::1"), Role: v1alpha1.RoleMaster}},
		Networking: v1alpha1.Networking{
			ServiceCIDR: netip.MustParsePrefix("fd00:96::/108"), ClusterDomain: "cluster.local"},
	}
	bare, err := ConfigFromCluster(c, "a")
	if err != nil {
		t.Fatal(err)
	}
	if bare.APIServerURL != "https://[fd00::1]:6443" || bare.ClusterName != "kubernetes" ||
		bare.KeyAlgorithm != v1alpha1.ECDSAP256 || bare.CAValidity != DefaultCAValidity || bare.CertValidity != DefaultCertValidity {
		t.Errorf("defaults: %+v", bare)
	}
	if ip := apiserverSANs(bare).IPs; !slices.Contains(ip, netip.MustParseAddr("fd00:96::1")) {
		t.Errorf("IPv6 first service IP missing: %v", ip)
	}
}

func configEqual(a, b Config) bool {
	return a.ClusterName == b.ClusterName && a.NodeName == b.NodeName && slices.Equal(a.NodeIPs, b.NodeIPs) &&
		a.ControlPlaneEndpoint == b.ControlPlaneEndpoint && a.VIP == b.VIP && a.ServiceCIDR == b.ServiceCIDR &&
		a.ClusterDomain == b.ClusterDomain && slices.Equal(a.CertSANs, b.CertSANs) && a.KeyAlgorithm == b.KeyAlgorithm &&
		a.CAValidity == b.CAValidity && a.CertValidity == b.CertValidity && a.APIServerURL == b.APIServerURL &&
		a.LocalAPIServerURL == b.LocalAPIServerURL
}

func TestConfigFromClusterRefuses(t *testing.T) {
	tests := []struct{ node, want string }{
		{"w1", `node "w1" is a worker`},
		{"m9", `node "m9" is not a host in the cluster file (masters: m1, m2, m3)`},
	}
	for _, tt := range tests {
		if _, err := ConfigFromCluster(testCluster(), tt.node); err == nil || err.Error() != tt.want &&
			!strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.node, err, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no node name", func(c *Config) { c.NodeName = "" }, "node name is empty"},
		{"bad node name", func(c *Config) { c.NodeName = "M_1" }, `node name "M_1" is not a DNS name`},
		{"no node IP", func(c *Config) { c.NodeIPs = nil }, "no IP address"},
		{"no endpoint", func(c *Config) { c.ControlPlaneEndpoint = "" }, "endpoint is empty"},
		{"bad endpoint", func(c *Config) { c.ControlPlaneEndpoint = "a b" }, "neither an IP address nor a DNS name"},
		{"no service CIDR", func(c *Config) { c.ServiceCIDR = netip.Prefix{} }, "service CIDR is not set"},
		{"no domain", func(c *Config) { c.ClusterDomain = "" }, "cluster domain"},
		{"bad algorithm", func(c *Config) { c.KeyAlgorithm = "DSA" }, `key algorithm "DSA" is not one of`},
		{"bad SAN", func(c *Config) { c.CertSANs = []string{"ok.example.com", "not ok"} }, `certSAN "not ok"`},
		{"wildcard SAN", func(c *Config) { c.CertSANs = []string{"*.example.com"} }, ""},
		{"http URL", func(c *Config) { c.APIServerURL = "http://x:6443" }, "not an https URL"},
		{"negative validity", func(c *Config) { c.CertValidity = -time.Hour }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, "m1")
			tt.change(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSANsWithoutDuplicates: an endpoint that is also a node IP, or a VIP
// equal to the endpoint, appears once.
func TestSANsWithoutDuplicates(t *testing.T) {
	cfg := testConfig(t, "m1")
	cfg.ControlPlaneEndpoint = "10.0.0.10"
	cfg.CertSANs = []string{"10.0.0.11", "kubernetes", "127.0.0.1"}
	s := apiserverSANs(cfg)
	if want := "10.0.0.10 10.0.0.11 10.96.0.1 127.0.0.1 192.168.1.11"; strings.Join(sortedAddrs(s.IPs), " ") != want {
		t.Errorf("IPs %v, want %s", s.IPs, want)
	}
	if len(s.DNSNames) != 5 {
		t.Errorf("DNS %v", s.DNSNames)
	}
}

func sortedAddrs(a []netip.Addr) []string {
	var out []string
	for _, x := range a {
		out = append(out, x.String())
	}
	slices.Sort(out)
	return out
}
