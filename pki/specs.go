package pki

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"net/netip"
	"slices"

	"anvil.dev/anvil/api/v1alpha1"
)

// The CAs' kubeadm names, which check-expiration shows and leaves refer to.
const (
	CAName             = "ca"
	EtcdCAName         = "etcd-ca"
	FrontProxyCAName   = "front-proxy-ca"
	ServiceAccountName = "sa"
	BackupSigningName  = "backup-signing"
)

// CASpec declares a self-signed CA.
type CASpec struct {
	// Name is kubeadm's name for it, as check-expiration shows it.
	Name       string
	BaseName   string
	CommonName string
}

// CertSpec declares a leaf certificate.
type CertSpec struct {
	// Name is kubeadm's name, the one `certs renew` and check-expiration use.
	Name     string
	BaseName string
	// CA is the Name of the CASpec that signs it.
	CA string
	// CommonName gives the subject CN; etcd's member certificates take the
	// node name.
	CommonName    func(Config) string
	Organizations []string
	Usages        []x509.ExtKeyUsage
	// SANs gives the subject alternative names; nil for client certificates.
	SANs func(Config) SANs
}

// KubeconfigSpec declares a kubeconfig with an embedded client certificate
// signed by the cluster CA.
type KubeconfigSpec struct {
	// Name is the file name under the kubeconfig directory.
	Name          string
	User          string
	Organizations []string
	// Local kubeconfigs point at this master's own apiserver
	// (Config.LocalAPIServerURL) rather than the control-plane endpoint.
	Local bool
	// OnDemand kubeconfigs are made only when asked (Options.SuperAdmin),
	// and kept, checked and renewed where they exist: super-admin.conf,
	// which bypasses RBAC, is on the first master only, as kubeadm does.
	OnDemand bool
}

// CAs lists the CAs in the order they are made.
func CAs() []CASpec {
	return []CASpec{
		{Name: CAName, BaseName: CACertAndKeyBaseName, CommonName: "kubernetes"},
		{Name: EtcdCAName, BaseName: EtcdCACertAndKeyBaseName, CommonName: "etcd-ca"},
		{Name: FrontProxyCAName, BaseName: FrontProxyCACertAndKeyBaseName, CommonName: "front-proxy-ca"},
	}
}

// Certificates lists the leaves, with kubeadm's names, subjects and usages
// (cmd/kubeadm/app/phases/certs/certlist.go).
//
// apiserver-kubelet-client carries no organization, as in kubeadm since it
// left system:masters: the apiserver's rights on kubelets come from a
// ClusterRoleBinding of its CN to system:kubelet-api-admin, which the
// bootstrap objects create. An organization here would make the
// credential every master holds a cluster admin.
func Certificates() []CertSpec {
	serverAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	serverAndClient := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	return []CertSpec{
		{Name: "apiserver", BaseName: APIServerCertAndKeyBaseName, CA: CAName,
			CommonName: fixed("kube-apiserver"), Usages: serverAuth, SANs: apiserverSANs},
		{Name: "apiserver-kubelet-client", BaseName: APIServerKubeletClientCertAndKeyBaseName, CA: CAName,
			CommonName: fixed(APIServerKubeletClientCN), Usages: clientAuth},
		{Name: "front-proxy-client", BaseName: FrontProxyClientCertAndKeyBaseName, CA: FrontProxyCAName,
			CommonName: fixed("front-proxy-client"), Usages: clientAuth},
		{Name: "etcd-server", BaseName: EtcdServerCertAndKeyBaseName, CA: EtcdCAName,
			CommonName: nodeName, Usages: serverAndClient, SANs: etcdSANs},
		{Name: "etcd-peer", BaseName: EtcdPeerCertAndKeyBaseName, CA: EtcdCAName,
			CommonName: nodeName, Usages: serverAndClient, SANs: etcdSANs},
		{Name: "etcd-healthcheck-client", BaseName: EtcdHealthcheckClientCertAndKeyBaseName, CA: EtcdCAName,
			CommonName: fixed("kube-etcd-healthcheck-client"), Usages: clientAuth},
		{Name: "apiserver-etcd-client", BaseName: APIServerEtcdClientCertAndKeyBaseName, CA: EtcdCAName,
			CommonName: fixed("kube-apiserver-etcd-client"), Usages: clientAuth},
	}
}

// APIServerKubeletClientCN is the user the apiserver is to kubelets; the
// bootstrap objects bind it to the system:kubelet-api-admin ClusterRole.
const APIServerKubeletClientCN = "kube-apiserver-kubelet-client"

// Kubeconfigs lists the kubeconfigs with kubeadm's users and groups.
func Kubeconfigs() []KubeconfigSpec {
	return []KubeconfigSpec{
		{Name: AdminKubeconfig, User: "kubernetes-admin", Organizations: []string{"kubeadm:cluster-admins"}},
		{Name: SuperAdminKubeconfig, User: "kubernetes-super-admin", Organizations: []string{"system:masters"}, OnDemand: true},
		{Name: ControllerManagerKubeconfig, User: "system:kube-controller-manager", Local: true},
		{Name: SchedulerKubeconfig, User: "system:kube-scheduler", Local: true},
		// anvil's own: the VIP manager may touch one Lease and nothing else
		// (RBAC in master's bootstrap objects).
		{Name: VIPKubeconfig, User: VIPUser, Local: true},
		// The CSR approver may approve kubelet certificates and read
		// Nodes (approver.RBAC).
		{Name: ApproverKubeconfig, User: ApproverUser, Local: true},
	}
}

// SharedFiles are the files, relative to the PKI directory, that every
// master must hold the same copy of: a joining master receives them and
// issues its own leaves from them.
func SharedFiles() []string {
	var out []string
	for _, ca := range CAs() {
		out = append(out, CertFile(ca.BaseName), KeyFile(ca.BaseName))
	}
	for _, kp := range KeyPairs() {
		out = append(out, kp.KeyName, kp.PubName)
	}
	return out
}

// KeyPairSpec is a bare key pair in the PKI directory: a private key and
// its public half, no certificate.
type KeyPairSpec struct {
	// Name is how results name it.
	Name             string
	KeyName, PubName string
	// Ed25519 makes it an ed25519 key whatever the cluster's key
	// algorithm; else it is of the cluster's algorithm.
	Ed25519 bool
}

func (s KeyPairSpec) newKey(a v1alpha1.KeyAlgorithm) (crypto.Signer, error) {
	if s.Ed25519 {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		return key, err
	}
	return NewKey(a)
}

// KeyPairs are the bare key pairs every master holds the same copy of:
// the service-account key pair and anvil's backup signing key pair.
func KeyPairs() []KeyPairSpec {
	return []KeyPairSpec{
		{Name: ServiceAccountName, KeyName: ServiceAccountKeyName, PubName: ServiceAccountPubKeyName},
		{Name: BackupSigningName, KeyName: BackupSigningKeyName, PubName: BackupSigningPubKeyName, Ed25519: true},
	}
}

func fixed(cn string) func(Config) string { return func(Config) string { return cn } }
func nodeName(c Config) string            { return c.NodeName }

// SANs are a certificate's subject alternative names, in a stable order
// without duplicates.
type SANs struct {
	DNSNames []string
	IPs      []netip.Addr
}

func (s *SANs) addDNS(names ...string) {
	for _, n := range names {
		if n != "" && !slices.Contains(s.DNSNames, n) {
			s.DNSNames = append(s.DNSNames, n)
		}
	}
}

func (s *SANs) addIP(ips ...netip.Addr) {
	for _, ip := range ips {
		if ip.IsValid() {
			s.IPs = appendAddr(s.IPs, ip.Unmap())
		}
	}
}

// addHost adds an IP address or a DNS name, whichever h is.
func (s *SANs) addHost(h string) {
	if ip, err := netip.ParseAddr(h); err == nil {
		s.addIP(ip)
		return
	}
	s.addDNS(h)
}

// apiserverSANs are the names clients reach the apiserver by: in-cluster
// through the kubernetes Service, from outside through the endpoint or VIP,
// directly on a master, and locally.
func apiserverSANs(c Config) SANs {
	var s SANs
	s.addDNS(c.NodeName, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc."+c.ClusterDomain)
	s.addIP(c.NodeIPs...)
	s.addHost(c.ControlPlaneEndpoint)
	s.addIP(c.VIP, firstServiceIP(c.ServiceCIDR), netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	for _, h := range c.CertSANs {
		s.addHost(h)
	}
	return s
}

// etcdSANs let members reach each other by name or address and local
// clients through the loopback addresses.
func etcdSANs(c Config) SANs {
	var s SANs
	s.addDNS(c.NodeName, "localhost")
	s.addIP(c.NodeIPs...)
	s.addIP(netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback())
	return s
}

// firstServiceIP is the address the kubernetes Service gets.
func firstServiceIP(p netip.Prefix) netip.Addr {
	if !p.IsValid() {
		return netip.Addr{}
	}
	return p.Masked().Addr().Next()
}
