package agent

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
)

const minimalConfig = `apiVersion: anvil.dev/v1alpha1
kind: AgentConfiguration
nodeName: w1
servers: [https://10.0.0.1:6443]
`

func TestDecodeConfig(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		// want are substrings every one of which the error must contain;
		// none means the file is valid.
		want []string
	}{
		{"minimal", minimalConfig, nil},
		{"everything", minimalConfig + `role: master
kubeconfig: /var/lib/anvil/agent/kubeconfig
nodeIP: 10.0.0.5
labels: {example.com/rack: r1, node-role.kubernetes.io/control-plane: ""}
taints: [{key: dedicated, value: db, effect: NoExecute}]
containerRuntimeEndpoints: [unix:///run/containerd/containerd.sock]
maxPods: 250
leaseDuration: 40s
renewInterval: 10s
statusUpdateInterval: 10s
statusReportInterval: 5m
rotateCertificates: false
metricsAddress: 127.0.0.1:10251
`, nil},
		{"empty", "", []string{"empty agent configuration"}},
		{"unknown field", minimalConfig + "nodeNmae: x\n", []string{"field nodeNmae not found"}},
		{"two documents", minimalConfig + "---\n" + minimalConfig, []string{"more than one YAML document"}},
		{"wrong kind", strings.Replace(minimalConfig, "AgentConfiguration", "Cluster", 1), []string{"kind: must be AgentConfiguration"}},
		{"no node name, no servers", "apiVersion: anvil.dev/v1alpha1\nkind: AgentConfiguration\n", []string{"nodeName: is required", "servers: name at least one"}},
		{"bad node name", strings.Replace(minimalConfig, "w1", "W_1", 1), []string{"nodeName: \"W_1\" is not a valid node name"}},
		{"http server", strings.Replace(minimalConfig, "6443]", "6443, http://10.0.0.2:6443]", 1), []string{"servers[1]: \"http://10.0.0.2:6443\" must be an https:// URL"}},
		{"server with a path", strings.Replace(minimalConfig, "6443]", "6443/api]", 1), []string{"servers[0]", "scheme://host[:port] only"}},
		{"bad role", minimalConfig + "role: boss\n", []string{"role: \"boss\" is not one of"}},
		{"bad label", minimalConfig + "labels: {\"bad key!\": v, ok: \"bad value!\"}\n", []string{"labels[bad key!]: key is not a valid label key", "labels[ok]: value \"bad value!\""}},
		{"bad taint", minimalConfig + "taints: [{key: a, effect: Sometimes}]\n", []string{"taints[0].effect: \"Sometimes\" is not one of"}},
		{"renew not below the duration", minimalConfig + "leaseDuration: 10s\nrenewInterval: 10s\n", []string{"renewInterval: 10s must be positive and below leaseDuration 10s"}},
		{"fractional lease duration", minimalConfig + "leaseDuration: 1500ms\n", []string{"leaseDuration: 1.5s must be whole seconds"}},
		{"report below update", minimalConfig + "statusReportInterval: 5s\n", []string{"statusReportInterval: 5s must not be below"}},
		{"metrics on every address", minimalConfig + "metricsAddress: 0.0.0.0:10251\n", []string{"metricsAddress: 0.0.0.0:10251 is not a loopback address"}},
		{"relative kubeconfig", minimalConfig + "kubeconfig: agent.conf\n", []string{"kubeconfig: \"agent.conf\" is not an absolute path"}},
		{"bad node IP", minimalConfig + "nodeIP: 10.0.0\n", []string{"line 5: nodeIP: ParseAddr"}},
		{"runs pods", minimalConfig + "runtime: containerd\npodCIDR: 10.244.0.0/16\nbinDir: /opt/anvil/bin/v1.37.2\n", nil},
		{"runs pods, brings its own network", minimalConfig + "runtime: containerd\nnetwork: none\nbinDir: /opt/anvil/bin/v1.37.2\n", nil},
		{"runs pods without its binaries", minimalConfig + "runtime: containerd\nnetwork: none\n", []string{"binDir: \"\" is not an absolute path"}},
		{"bad runtime", minimalConfig + "runtime: docker\n", []string{"runtime: \"docker\" is not one of"}},
		{"host-gw without a pod CIDR", minimalConfig + "runtime: containerd\n", []string{"podCIDR: missing"}},
		{"bad network", minimalConfig + "runtime: containerd\nnetwork: flannel\npodCIDR: 10.244.0.0/16\n", []string{"network: \"flannel\" is neither"}},
		{"bad duration", minimalConfig + "renewInterval: soon\nleaseDuration: 5q\n", []string{"line 5: renewInterval: cannot unmarshal", "line 6: leaseDuration: cannot unmarshal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := DecodeConfig("agent.yaml", []byte(tt.yaml))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if c.NodeName != "w1" {
					t.Errorf("node name %q", c.NodeName)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error with %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), "agent.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := DecodeConfig("agent.yaml", []byte(minimalConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.Role != v1alpha1.RoleWorker || c.Kubeconfig != KubeconfigFile || c.MaxPods != DefaultMaxPods ||
		c.LeaseDuration != 40*time.Second || c.RenewInterval != 10*time.Second ||
		c.StatusUpdateInterval != 10*time.Second || c.StatusReportInterval != 5*time.Minute ||
		c.RotateCertificates == nil || !*c.RotateCertificates || c.MetricsAddress != DefaultMetricsAddress() ||
		len(c.ContainerRuntimeEndpoints) != len(RuntimeSockets()) || c.EphemeralStoragePath != "/var/lib" ||
		c.Runtime != v1alpha1.RuntimeNone || c.RunsPods() {
		t.Errorf("defaults: %+v", c)
	}
	// Round trip: what Marshal writes decodes to the same configuration.
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := DecodeConfig("again.yaml", b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if again.MetricsAddress != c.MetricsAddress || again.RenewInterval != c.RenewInterval || again.NodeIP != c.NodeIP {
		t.Errorf("round trip changed it:\n%s", b)
	}
	// An unset nodeIP stays unset, and so does the Service CIDR.
	if again.NodeIP.IsValid() || again.ServiceCIDR.IsValid() {
		t.Errorf("nodeIP %v, serviceCIDR %v after a round trip", again.NodeIP, again.ServiceCIDR)
	}
	// A set Service CIDR is written and read back (omitempty would drop
	// it: yaml sees no exported field in a netip.Prefix).
	again.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")
	if b, err = again.Marshal(); err != nil {
		t.Fatal(err)
	}
	third, err := DecodeConfig("third.yaml", b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if third.ServiceCIDR != again.ServiceCIDR {
		t.Errorf("serviceCIDR %v after a round trip, want %v:\n%s", third.ServiceCIDR, again.ServiceCIDR, b)
	}
}

func TestConfigErrorsAreFieldErrors(t *testing.T) {
	c := &Config{NodeName: "w1"}
	c.Default()
	err := c.Validate()
	var fe FieldError
	if !errors.As(err, &fe) || fe.Path != "servers" {
		t.Fatalf("%v: want a FieldError for servers", err)
	}
}

func TestResolvePaths(t *testing.T) {
	c := &Config{NodeName: "w1", Servers: []string{"https://a:6443"}}
	c.Default()
	c.ResolvePaths("/tmp/root")
	if c.Kubeconfig != "/tmp/root"+KubeconfigFile || c.EphemeralStoragePath != "/tmp/root/var/lib" ||
		c.ContainerRuntimeEndpoints[0] != "/tmp/root/run/containerd/containerd.sock" {
		t.Errorf("resolved: %+v", c)
	}
	// Twice is once.
	c.ResolvePaths("/tmp/root")
	if c.Kubeconfig != "/tmp/root"+KubeconfigFile {
		t.Errorf("resolved twice: %s", c.Kubeconfig)
	}
	c.ResolvePaths("/")
	if c.Kubeconfig != "/tmp/root"+KubeconfigFile {
		t.Errorf("the real root changed %s", c.Kubeconfig)
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"https://10.0.0.1:6443", "https://10.0.0.1:6443", ""},
		{"10.0.0.1", "https://10.0.0.1:6443", ""},
		{"10.0.0.1:7443", "https://10.0.0.1:7443", ""},
		{"api.example.com", "https://api.example.com:6443", ""},
		{"https://[fd00::1]:6443/", "https://[fd00::1]:6443", ""},
		{"fd00::1", "", "endpoint"},
		{"http://10.0.0.1:6443", "", "must be an https:// URL"},
		{"", "", "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseEndpoint(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseEndpoint(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseEndpoint(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestDefaultMetricsAddressMatchesComponent(t *testing.T) {
	c, err := Component(ComponentOptions{AnvilBinary: "/usr/local/bin/anvil"})
	if err != nil {
		t.Fatal(err)
	}
	want := "http://" + DefaultMetricsAddress().String() + "/healthz"
	if c.Health.Live.URL != want {
		t.Errorf("probe %s, want %s", c.Health.Live.URL, want)
	}
	c, err = Component(ComponentOptions{AnvilBinary: "/usr/local/bin/anvil", MetricsAddress: netip.MustParseAddrPort("127.0.0.1:20251").String()})
	if err != nil {
		t.Fatal(err)
	}
	if c.Health.Ready.URL != "http://127.0.0.1:20251/healthz" || c.Ports[0].Number != 20251 {
		t.Errorf("custom metrics address: %+v %+v", c.Health, c.Ports)
	}
}
