package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// ConfigAPIVersion and ConfigKind identify an agent configuration file.
const (
	ConfigAPIVersion = v1alpha1.APIVersion
	ConfigKind       = "AgentConfiguration"
)

// KubeconfigFile is the agent's own kubeconfig (its node client
// certificate, renewed in place), as a host path.
const KubeconfigFile = StateDir + "/kubeconfig"

// Defaults of the kubelet's node-heartbeat contract (KEP-589): a Lease of
// 40 s renewed every quarter of it, status computed every 10 s and posted
// when it changes or at least every 5 minutes.
const (
	DefaultLeaseDuration        = 40 * time.Second
	DefaultStatusUpdateInterval = 10 * time.Second
	DefaultStatusReportInterval = 5 * time.Minute
	DefaultMaxPods              = 110
)

// DefaultMetricsAddress is where /healthz and /metrics are served.
func DefaultMetricsAddress() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), MetricsPort)
}

// RuntimeSockets are the container runtime endpoints a node is checked for
// when its configuration names none, as host paths.
func RuntimeSockets() []string {
	return []string{
		"/run/containerd/containerd.sock",
		"/run/crio/crio.sock",
		"/run/cri-dockerd.sock",
	}
}

// Config is agent.yaml, what `anvil agent` runs from. Join (and init, for
// masters) writes it; paths in it are runtime paths, already under the
// --root of a test.
type Config struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	// NodeName is the Node this agent registers and heartbeats for; its
	// client certificate is for system:node:NodeName.
	NodeName string        `yaml:"nodeName"`
	Role     v1alpha1.Role `yaml:"role"`
	// Servers are the apiserver URLs, tried in order; the agent fails over
	// to the next when one stops answering.
	Servers []string `yaml:"servers"`
	// Kubeconfig holds the cluster CA and the client certificate and key
	// (0600); the agent rewrites it when it renews the certificate.
	Kubeconfig string `yaml:"kubeconfig"`
	// NodeIP is the InternalIP the Node reports; unset means the addresses
	// of the interface that holds the default route.
	NodeIP netip.Addr `yaml:"nodeIP"`
	// Labels are put on the Node. Those in kubernetes.io and k8s.io other
	// than the kubelet's own are applied by an administrator (init, join,
	// cluster apply), because NodeRestriction forbids a node to set them.
	Labels map[string]string `yaml:"labels,omitempty"`
	// Taints are set when the Node is registered; NodeRestriction forbids a
	// node to change its taints afterwards.
	Taints []v1alpha1.Taint `yaml:"taints,omitempty"`
	// ContainerRuntimeEndpoints are the sockets checked for a container
	// runtime; with none present the Node is registered with
	// NoRuntimeTaint. Empty means RuntimeSockets.
	ContainerRuntimeEndpoints []string `yaml:"containerRuntimeEndpoints,omitempty"`
	// EphemeralStoragePath is the filesystem whose size is the Node's
	// ephemeral-storage; empty means /var/lib.
	EphemeralStoragePath string `yaml:"ephemeralStoragePath,omitempty"`
	MaxPods              int    `yaml:"maxPods,omitempty"`
	// LeaseDuration is the Lease's spec.leaseDurationSeconds; RenewInterval
	// (a quarter of it by default) is how often it is renewed.
	LeaseDuration time.Duration `yaml:"leaseDuration,omitempty"`
	RenewInterval time.Duration `yaml:"renewInterval,omitempty"`
	// StatusUpdateInterval is how often the status is computed and posted
	// if it changed; StatusReportInterval how often it is posted anyway.
	StatusUpdateInterval time.Duration `yaml:"statusUpdateInterval,omitempty"`
	StatusReportInterval time.Duration `yaml:"statusReportInterval,omitempty"`
	// RotateCertificates renews the client certificate through a CSR
	// before it expires (default true).
	RotateCertificates *bool `yaml:"rotateCertificates,omitempty"`
	// MetricsAddress serves /healthz and /metrics; it must be a loopback
	// address.
	MetricsAddress netip.AddrPort `yaml:"metricsAddress"`
	// Runtime is containerd when the kubelet runs on this machine: the
	// kubelet then registers the Node, renews its Lease and posts its
	// status, and the agent runs the pod network and imports image
	// archives. none (the default, and what an agent.yaml from before the
	// node stack means) keeps the agent's own Node, Lease and status.
	Runtime v1alpha1.Runtime `yaml:"runtime,omitempty"`
	// Network is the pod network the agent programs when the machine runs
	// pods: host-gw, or none when the operator brings a CNI.
	Network v1alpha1.PodNetwork `yaml:"network,omitempty"`
	// PodCIDR is the cluster's pod CIDR (networking.podCIDR): only Node
	// pod ranges inside it are routed, and pod traffic leaving it is
	// masqueraded.
	PodCIDR netip.Prefix `yaml:"podCIDR"`
	// ServiceCIDR is the cluster's Service CIDR (networking.serviceCIDR):
	// when no route of the machine covers it (no default route), the pod
	// network routes it through the node's interface, so the machine
	// itself reaches ClusterIPs. Empty in an agent.yaml from before it.
	ServiceCIDR netip.Prefix `yaml:"serviceCIDR"`
	// BinDir holds the node stack's binaries (ctr, to import image
	// archives); required when the machine runs pods.
	BinDir string `yaml:"binDir,omitempty"`
	// Root is the runtime root every host path of the node stack is under
	// (the process layout's --root); empty on a real host.
	Root hostfs.Root `yaml:"root,omitempty"`
}

// RunsPods reports whether the kubelet runs on this machine.
func (c *Config) RunsPods() bool { return c.Runtime == v1alpha1.RuntimeContainerd }

// RunsPodNetwork reports whether the agent runs anvil's pod network
// (package podnet): on a machine that runs pods, unless the operator
// brings a CNI.
func (c *Config) RunsPodNetwork() bool {
	return c.RunsPods() && c.Network == v1alpha1.PodNetworkHostGW
}

// Default fills in what was left out.
func (c *Config) Default() {
	if c.APIVersion == "" {
		c.APIVersion = ConfigAPIVersion
	}
	if c.Kind == "" {
		c.Kind = ConfigKind
	}
	if c.Role == "" {
		c.Role = v1alpha1.RoleWorker
	}
	if c.Kubeconfig == "" {
		c.Kubeconfig = KubeconfigFile
	}
	if len(c.ContainerRuntimeEndpoints) == 0 {
		c.ContainerRuntimeEndpoints = RuntimeSockets()
	}
	if c.EphemeralStoragePath == "" {
		c.EphemeralStoragePath = "/var/lib"
	}
	if c.MaxPods == 0 {
		c.MaxPods = DefaultMaxPods
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseDuration / 4
	}
	if c.StatusUpdateInterval == 0 {
		c.StatusUpdateInterval = DefaultStatusUpdateInterval
	}
	if c.StatusReportInterval == 0 {
		c.StatusReportInterval = DefaultStatusReportInterval
	}
	if c.RotateCertificates == nil {
		t := true
		c.RotateCertificates = &t
	}
	if !c.MetricsAddress.IsValid() {
		c.MetricsAddress = DefaultMetricsAddress()
	}
	if c.Runtime == "" {
		c.Runtime = v1alpha1.RuntimeNone
	}
	if c.Network == "" && c.RunsPods() {
		c.Network = v1alpha1.PodNetworkHostGW
	}
}

// FieldError is one problem with agent.yaml, at a field path.
type FieldError struct {
	Path    string
	Message string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

// Validate reports every problem of a defaulted Config, each with its field
// path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	c.validateIdentity(bad)
	c.validateLabelsAndTaints(bad)
	c.validateMachine(bad)
	c.validateIntervals(bad)
	c.validateRuntime(bad)
	if !c.MetricsAddress.Addr().IsLoopback() {
		bad("metricsAddress", "%s is not a loopback address: metrics stay on this machine", c.MetricsAddress)
	}
	return errors.Join(errs...)
}

func (c *Config) validateRuntime(bad badField) {
	if !slices.Contains(v1alpha1.Runtimes(), c.Runtime) {
		bad("runtime", "%q is not one of %v", c.Runtime, v1alpha1.Runtimes())
		return
	}
	if !c.RunsPods() {
		return
	}
	if !filepath.IsAbs(c.BinDir) {
		bad("binDir", "%q is not an absolute path: the agent imports image archives with its ctr", c.BinDir)
	}
	switch c.Network {
	case v1alpha1.PodNetworkHostGW:
		if !c.PodCIDR.IsValid() {
			bad("podCIDR", "missing: the %s pod network routes the ranges inside it", c.Network)
		}
	case v1alpha1.PodNetworkNone:
	default:
		bad("network", "%q is neither %s nor %s", c.Network, v1alpha1.PodNetworkHostGW, v1alpha1.PodNetworkNone)
	}
}

// badField records one problem Validate found, at a field path.
type badField func(path, format string, args ...any)

// validateIdentity checks who the agent is and whom it talks to: the
// document's kind, the node's name and role, the apiservers, the
// kubeconfig.
func (c *Config) validateIdentity(bad badField) {
	if c.APIVersion != ConfigAPIVersion {
		bad("apiVersion", "must be %s, not %q", ConfigAPIVersion, c.APIVersion)
	}
	if c.Kind != ConfigKind {
		bad("kind", "must be %s, not %q", ConfigKind, c.Kind)
	}
	if c.NodeName == "" {
		bad("nodeName", "is required")
	} else if msgs := validation.IsDNS1123Subdomain(c.NodeName); len(msgs) > 0 {
		bad("nodeName", "%q is not a valid node name: %s", c.NodeName, strings.Join(msgs, "; "))
	}
	if !slices.Contains(v1alpha1.Roles(), c.Role) {
		bad("role", "%q is not one of %v", c.Role, v1alpha1.Roles())
	}
	if len(c.Servers) == 0 {
		bad("servers", "name at least one apiserver URL")
	}
	for i, s := range c.Servers {
		if err := checkServerURL(s); err != nil {
			bad(fmt.Sprintf("servers[%d]", i), "%v", err)
		}
	}
	if !filepath.IsAbs(c.Kubeconfig) {
		bad("kubeconfig", "%q is not an absolute path", c.Kubeconfig)
	}
}

// validateLabelsAndTaints checks what the Node is registered with.
func (c *Config) validateLabelsAndTaints(bad badField) {
	for _, k := range sortedKeys(c.Labels) {
		path := "labels[" + k + "]"
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			bad(path, "key is not a valid label key: %s", strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(c.Labels[k]); len(msgs) > 0 {
			bad(path, "value %q is not a valid label value: %s", c.Labels[k], strings.Join(msgs, "; "))
		}
	}
	for i, t := range c.Taints {
		path := fmt.Sprintf("taints[%d]", i)
		if msgs := validation.IsQualifiedName(t.Key); len(msgs) > 0 {
			bad(path+".key", "%q is not a valid taint key: %s", t.Key, strings.Join(msgs, "; "))
		}
		if t.Value != "" {
			if msgs := validation.IsValidLabelValue(t.Value); len(msgs) > 0 {
				bad(path+".value", "%q is not a valid taint value: %s", t.Value, strings.Join(msgs, "; "))
			}
		}
		if !slices.Contains(v1alpha1.TaintEffects(), t.Effect) {
			bad(path+".effect", "%q is not one of %v", t.Effect, v1alpha1.TaintEffects())
		}
	}
}

// validateMachine checks what the agent reads of the machine: runtime
// sockets, the storage path, the pod capacity.
func (c *Config) validateMachine(bad badField) {
	for i, p := range c.ContainerRuntimeEndpoints {
		if !filepath.IsAbs(strings.TrimPrefix(p, "unix://")) {
			bad(fmt.Sprintf("containerRuntimeEndpoints[%d]", i), "%q is not an absolute socket path", p)
		}
	}
	if !filepath.IsAbs(c.EphemeralStoragePath) {
		bad("ephemeralStoragePath", "%q is not an absolute path", c.EphemeralStoragePath)
	}
	if c.MaxPods < 1 || c.MaxPods > 10000 {
		bad("maxPods", "%d is not between 1 and 10000", c.MaxPods)
	}
}

// validateIntervals checks the Lease's and the status's timing against
// each other.
func (c *Config) validateIntervals(bad badField) {
	if c.LeaseDuration < time.Second || c.LeaseDuration%time.Second != 0 {
		bad("leaseDuration", "%s must be whole seconds, at least 1s", c.LeaseDuration)
	}
	if c.RenewInterval <= 0 || c.RenewInterval >= c.LeaseDuration {
		bad("renewInterval", "%s must be positive and below leaseDuration %s", c.RenewInterval, c.LeaseDuration)
	}
	if c.StatusUpdateInterval <= 0 {
		bad("statusUpdateInterval", "%s must be positive", c.StatusUpdateInterval)
	}
	if c.StatusReportInterval < c.StatusUpdateInterval {
		bad("statusReportInterval", "%s must not be below statusUpdateInterval %s", c.StatusReportInterval, c.StatusUpdateInterval)
	}
}

func checkServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%q must be an https:// URL", s)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q must be scheme://host[:port] only", s)
	}
	return nil
}

// ParseEndpoint turns what an operator types (a URL, host:port, or a bare
// host) into the apiserver URL https://host:port, 6443 by default.
func ParseEndpoint(s string) (string, error) {
	raw := strings.TrimSpace(s)
	if raw == "" {
		return "", errors.New("the apiserver endpoint is empty")
	}
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", s, err)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(v1alpha1.DefaultAPIServerPort))
	}
	u.Path = ""
	out := u.Scheme + "://" + u.Host
	if err := checkServerURL(out); err != nil {
		return "", fmt.Errorf("endpoint %q: %w", s, err)
	}
	return out, nil
}

// DecodeConfig parses agent.yaml strictly (an unknown field or a second
// document is an error), defaults and validates it. Errors name the file
// and, for decode errors, the line.
func DecodeConfig(name string, data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	c := &Config{}
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty agent configuration", name)
		}
		return nil, fmt.Errorf("%s: %w", name, locateError(data, err))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one YAML document", name)
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// locateError names the field and line of every value that did not decode
// (yaml reports a bad address without saying where, and a bad duration
// without saying which field): it decodes the top-level fields one at a
// time.
func locateError(data []byte, err error) error {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return err
	}
	m := doc.Content[0]
	var errs []error
	for i := 0; i+1 < len(m.Content); i += 2 {
		key := m.Content[i]
		one := &yaml.Node{Kind: yaml.MappingNode, Content: m.Content[i : i+2]}
		ferr := one.Decode(&Config{})
		if ferr == nil {
			continue
		}
		var te *yaml.TypeError
		if errors.As(ferr, &te) {
			// Each of its messages starts "line N: "; put the field after it.
			for _, msg := range te.Errors {
				line, rest, ok := strings.Cut(msg, ": ")
				if !ok {
					line, rest = fmt.Sprintf("line %d", key.Line), msg
				}
				errs = append(errs, fmt.Errorf("%s: %s: %s", line, key.Value, rest))
			}
			continue
		}
		errs = append(errs, fmt.Errorf("line %d: %s: %w", key.Line, key.Value, ferr))
	}
	if len(errs) == 0 {
		return err
	}
	return errors.Join(errs...)
}

// LoadConfig reads agent.yaml.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read agent configuration: %w", err)
	}
	return DecodeConfig(path, b)
}

// Marshal renders the configuration as YAML.
func (c *Config) Marshal() ([]byte, error) {
	return yaml.Marshal(c)
}

// WriteConfig writes c to path (0600) when its content differs.
func WriteConfig(path string, c *Config) (fsutil.Outcome, error) {
	b, err := c.Marshal()
	if err != nil {
		return fsutil.Unchanged, fmt.Errorf("encode %s: %w", path, err)
	}
	return fsutil.EnsureFile(path, b, 0o600, 0o700)
}

// ResolvePaths puts the host paths of c under root (for the process
// layout, whose components run under a test's --root). Paths already
// under root are kept.
func (c *Config) ResolvePaths(root hostfs.Root) {
	under := func(p string) string {
		if root == "" || root == "/" || strings.HasPrefix(p, string(root)+"/") {
			return p
		}
		return root.Path(p)
	}
	if root != "" && root != "/" {
		c.Root = root
	}
	c.Kubeconfig = under(c.Kubeconfig)
	c.EphemeralStoragePath = under(c.EphemeralStoragePath)
	for i, p := range c.ContainerRuntimeEndpoints {
		c.ContainerRuntimeEndpoints[i] = under(strings.TrimPrefix(p, "unix://"))
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
