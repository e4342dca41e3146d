package podnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

const (
	// NetworkName is the CNI network's name; host-local keeps its
	// reservations under /var/lib/cni/networks/<name>.
	NetworkName = "anvil"
	// BridgeName is the bridge the CNI bridge plugin creates on each node,
	// holding the gateway address of the node's pod range.
	BridgeName = "anvil0"
	// CNIConfigPath is where the CNI config list goes. containerd loads the
	// first file of /etc/cni/net.d in name order.
	CNIConfigPath = "/etc/cni/net.d/10-anvil.conflist"
	// CNIVersion is the CNI spec version of the config (CNI plugins v1.x).
	CNIVersion = "1.0.0"
	// HostLocalDataDir is where host-local keeps its address reservations.
	HostLocalDataDir = "/var/lib/cni/networks"
)

// CNIInput is what a node's CNI config is made of.
type CNIInput struct {
	// PodCIDRs are the node's own pod ranges (Node.spec.podCIDRs): one
	// per IP family, the primary first.
	PodCIDRs []netip.Prefix
	// ClusterPodCIDRs are the cluster's pod CIDRs (networking.podCIDR),
	// each holding the node's range of its family.
	ClusterPodCIDRs []netip.Prefix
	// MTU of the pods' interfaces; 0 leaves the plugin's default (1500).
	// With host-gw nothing is encapsulated, so the node interface's MTU is
	// right, jumbo frames included.
	MTU int
}

// The config list as the CNI spec shapes it. Field order is the output
// order, so the rendering is deterministic.
type cniConfList struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type bridgePlugin struct {
	Type        string `json:"type"`
	Bridge      string `json:"bridge"`
	IsGateway   bool   `json:"isGateway"`
	IPMasq      bool   `json:"ipMasq"`
	HairpinMode bool   `json:"hairpinMode"`
	MTU         int    `json:"mtu,omitempty"`
	IPAM        ipam   `json:"ipam"`
}

type ipam struct {
	Type    string       `json:"type"`
	DataDir string       `json:"dataDir"`
	Ranges  [][]ipRange  `json:"ranges"`
	Routes  []ipamRoutes `json:"routes"`
}

type ipRange struct {
	Subnet string `json:"subnet"`
}

type ipamRoutes struct {
	Dst string `json:"dst"`
}

type portmapPlugin struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
}

// CNIConfig renders the node's CNI config list: the bridge plugin (the
// bridge is the pods' gateway; no masquerade, the node's nftables table
// does that for the whole node; hairpin so a pod reaches itself through a
// Service) with host-local IPAM over the node's range(s), and portmap for
// hostPort. Loopback needs no entry: containerd sets lo up itself.
//
// Pods get a route to the cluster's pod CIDR and a default route, both
// through the bridge: the first says what the network is for, the second
// lets them reach Service ClusterIPs (which kube-proxy rewrites on the
// node) and the world.
func CNIConfig(in CNIInput) ([]byte, error) {
	if err := validateCNI(in); err != nil {
		return nil, err
	}
	var ranges [][]ipRange
	var routes []ipamRoutes
	for _, p := range in.PodCIDRs {
		ranges = append(ranges, []ipRange{{Subnet: p.String()}})
		for _, c := range in.ClusterPodCIDRs {
			if c.Addr().Is4() == p.Addr().Is4() {
				routes = append(routes, ipamRoutes{Dst: c.String()})
			}
		}
		routes = append(routes, ipamRoutes{Dst: defaultRoute(p.Addr()).String()})
	}
	list := cniConfList{
		CNIVersion: CNIVersion,
		Name:       NetworkName,
		Plugins: []any{
			bridgePlugin{
				Type:        "bridge",
				Bridge:      BridgeName,
				IsGateway:   true,
				IPMasq:      false,
				HairpinMode: true,
				MTU:         in.MTU,
				IPAM: ipam{
					Type:    "host-local",
					DataDir: HostLocalDataDir,
					Ranges:  ranges,
					Routes:  routes,
				},
			},
			portmapPlugin{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render CNI config: %w", err)
	}
	return append(b, '\n'), nil
}

func validateCNI(in CNIInput) error {
	if len(in.PodCIDRs) == 0 {
		return fmt.Errorf("render CNI config: the node has no pod CIDR")
	}
	if len(in.PodCIDRs) > 2 || len(in.PodCIDRs) == 2 && in.PodCIDRs[0].Addr().Is4() == in.PodCIDRs[1].Addr().Is4() {
		return fmt.Errorf("render CNI config: pod CIDRs %v: at most one per IP family", in.PodCIDRs)
	}
	if in.MTU < 0 || in.MTU > 0 && in.MTU < 576 {
		return fmt.Errorf("render CNI config: MTU %d is too small", in.MTU)
	}
	for _, p := range in.PodCIDRs {
		if !within(p, in.ClusterPodCIDRs) {
			return fmt.Errorf("render CNI config: node pod CIDR %s is not inside the cluster's pod CIDR %v", p, in.ClusterPodCIDRs)
		}
	}
	return nil
}

// within reports whether p is a valid, masked prefix inside one of
// cluster's.
func within(p netip.Prefix, cluster []netip.Prefix) bool {
	if !p.IsValid() || p.Masked() != p {
		return false
	}
	for _, c := range cluster {
		if c.Addr().Is4() == p.Addr().Is4() && c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func defaultRoute(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

// WriteCNIConfig writes data to CNIConfigPath under root, atomically and
// only when it differs, so an unchanged config keeps its mtime and
// containerd does not reload it. It is 0600 (CIS 1.1.9): containerd reads
// it as root, and nobody else needs the node's pod ranges and routes. A
// config an older anvil wrote 0644 is tightened in place.
func WriteCNIConfig(root hostfs.Root, data []byte) (fsutil.Outcome, error) {
	return fsutil.EnsureFile(root.Path(CNIConfigPath), data, 0o600, 0o755)
}

// removeCNIConfig removes anvil's config list and host-local's
// reservations of the anvil network (every pod is gone after a reset).
func removeCNIConfig(root hostfs.Root) error {
	path := root.Path(CNIConfigPath)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove CNI config %s: %w", path, err)
	}
	dir := root.Join(HostLocalDataDir, NetworkName)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove host-local reservations %s: %w", dir, err)
	}
	return nil
}
