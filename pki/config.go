package pki

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
)

// The cluster file's defaults (kubeadm's), used when a Config leaves a
// field zero.
const (
	DefaultCAValidity   = v1alpha1.DefaultCAValidityDays * 24 * time.Hour
	DefaultCertValidity = v1alpha1.DefaultCertValidityDays * 24 * time.Hour
	DefaultClusterName  = "kubernetes"
)

// Config is everything about one control-plane node that goes into its
// certificates and kubeconfigs.
type Config struct {
	// ClusterName names the cluster entry and contexts in kubeconfigs.
	ClusterName string
	// NodeName is the etcd member and apiserver DNS SAN, and the CN of the
	// etcd server and peer certificates.
	NodeName string
	// NodeIPs are this node's addresses (the host's address and its
	// internal address); they go into the apiserver and etcd SANs.
	NodeIPs []netip.Addr
	// ControlPlaneEndpoint is the address or DNS name clients use (no port).
	ControlPlaneEndpoint string
	// VIP is the floating control-plane address, when there is one.
	VIP netip.Addr
	// ServiceCIDR's first address is the in-cluster `kubernetes` Service.
	ServiceCIDR   netip.Prefix
	ClusterDomain string
	// CertSANs are extra apiserver SANs: IP addresses or DNS names.
	CertSANs []string

	KeyAlgorithm v1alpha1.KeyAlgorithm
	CAValidity   time.Duration
	CertValidity time.Duration

	// APIServerURL is what admin.conf and super-admin.conf point at: the
	// control-plane endpoint, so they work whichever master is up.
	APIServerURL string
	// LocalAPIServerURL is what controller-manager.conf and scheduler.conf
	// point at, as in kubeadm: this master's own apiserver, so those
	// components never depend on the VIP or another master. Empty means
	// APIServerURL.
	LocalAPIServerURL string
}

// ConfigFromCluster is the Config for master nodeName of a cluster file that
// went through v1alpha1.Load (defaulted and validated). A Cluster built in
// Go may leave the endpoint, port and PKI settings zero: they fall back to
// the cluster file's defaults.
func ConfigFromCluster(c *v1alpha1.Cluster, nodeName string) (Config, error) {
	if c == nil {
		return Config{}, errors.New("no cluster file")
	}
	h, ok := c.Host(nodeName)
	if !ok {
		names := make([]string, 0, len(c.Masters()))
		for _, m := range c.Masters() {
			names = append(names, m.Name)
		}
		return Config{}, fmt.Errorf("node %q is not a host in the cluster file (masters: %s)", nodeName, strings.Join(names, ", "))
	}
	if !h.IsMaster() {
		return Config{}, fmt.Errorf("node %q is a %s; control-plane certificates are made on masters only", nodeName, h.Role)
	}
	var ips []netip.Addr
	for _, a := range []netip.Addr{h.Address, h.InternalAddress} {
		if a.IsValid() {
			ips = appendAddr(ips, a.Unmap())
		}
	}
	endpoint := c.ControlPlane.Endpoint
	if endpoint == "" {
		if c.ControlPlane.VIP.IsValid() {
			endpoint = c.ControlPlane.VIP.String()
		} else if ms := c.Masters(); len(ms) > 0 {
			endpoint = ms[0].Address.String()
		}
	}
	port := int(c.ControlPlane.Port)
	if port == 0 {
		port = v1alpha1.DefaultAPIServerPort
	}
	cfg := Config{
		ClusterName:          c.Name,
		NodeName:             h.Name,
		NodeIPs:              ips,
		ControlPlaneEndpoint: endpoint,
		VIP:                  c.ControlPlane.VIP,
		ServiceCIDR:          c.Networking.ServiceCIDR,
		ClusterDomain:        c.Networking.ClusterDomain,
		CertSANs:             append([]string(nil), c.PKI.CertSANs...),
		KeyAlgorithm:         c.PKI.KeyAlgorithm,
		CAValidity:           c.PKI.CAValidity.Duration,
		CertValidity:         c.PKI.CertValidity.Duration,
		APIServerURL:         "https://" + net.JoinHostPort(endpoint, strconv.Itoa(port)),
		LocalAPIServerURL:    "https://" + net.JoinHostPort(h.NodeAddress().String(), strconv.Itoa(port)),
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// withDefaults fills the fields kubeadm has defaults for.
func (c Config) withDefaults() Config {
	if c.ClusterName == "" {
		c.ClusterName = DefaultClusterName
	}
	if c.KeyAlgorithm == "" {
		c.KeyAlgorithm = v1alpha1.DefaultKeyAlgorithm
	}
	if c.CAValidity == 0 {
		c.CAValidity = DefaultCAValidity
	}
	if c.CertValidity == 0 {
		c.CertValidity = DefaultCertValidity
	}
	if c.LocalAPIServerURL == "" {
		c.LocalAPIServerURL = c.APIServerURL
	}
	return c
}

// Validate reports the first field the certificates cannot be made from.
// Zero fields that have defaults are accepted.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.NodeName == "":
		return errors.New("pki config: node name is empty")
	case !isDNSName(c.NodeName):
		return fmt.Errorf("pki config: node name %q is not a DNS name", c.NodeName)
	case len(c.NodeIPs) == 0:
		return errors.New("pki config: node has no IP address")
	case c.ControlPlaneEndpoint == "":
		return errors.New("pki config: control-plane endpoint is empty")
	case !isHost(c.ControlPlaneEndpoint):
		return fmt.Errorf("pki config: control-plane endpoint %q is neither an IP address nor a DNS name", c.ControlPlaneEndpoint)
	case !c.ServiceCIDR.IsValid():
		return errors.New("pki config: service CIDR is not set")
	case c.ClusterDomain == "" || !isDNSName(c.ClusterDomain):
		return fmt.Errorf("pki config: cluster domain %q is not a DNS name", c.ClusterDomain)
	case c.CAValidity < 0 || c.CertValidity < 0:
		return errors.New("pki config: validity is negative")
	}
	for _, ip := range c.NodeIPs {
		if !ip.IsValid() {
			return errors.New("pki config: node IP is not set")
		}
	}
	if _, err := algorithmBits(c.KeyAlgorithm); err != nil {
		return fmt.Errorf("pki config: %w", err)
	}
	for _, s := range c.CertSANs {
		if !isHost(s) && !isWildcardDNSName(s) {
			return fmt.Errorf("pki config: certSAN %q is neither an IP address nor a DNS name", s)
		}
	}
	for _, u := range []string{c.APIServerURL, c.LocalAPIServerURL} {
		p, err := url.Parse(u)
		if err != nil || p.Scheme != "https" || p.Host == "" {
			return fmt.Errorf("pki config: apiserver URL %q is not an https URL", u)
		}
	}
	return nil
}

func isHost(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil || isDNSName(s)
}

// isDNSName accepts RFC 1123 host names, lower case as Kubernetes wants them.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}

func isWildcardDNSName(s string) bool {
	rest, ok := strings.CutPrefix(s, "*.")
	return ok && isDNSName(rest)
}

func appendAddr(list []netip.Addr, a netip.Addr) []netip.Addr {
	for _, b := range list {
		if a == b {
			return list
		}
	}
	return append(list, a)
}
