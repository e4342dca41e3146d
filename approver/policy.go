package approver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

// Names the policy relies on.
const (
	// NodeBootstrapGroupPrefix starts the extra group of a bootstrap token
	// made for one node's join: the token may mint that node's client
	// certificate and no other. Make the group with NodeBootstrapGroup.
	NodeBootstrapGroupPrefix = "system:bootstrappers:anvil:node:"
	// DefaultBootstrapGroup is kubeadm's group of node bootstrap tokens
	// (master.NodeBootstrapGroup), whose CSRs the controller-manager
	// approves unless OwnBootstrapApproval says anvil is the only approver.
	DefaultBootstrapGroup = "system:bootstrappers:kubeadm:default-node-token"
	// NodesGroup and NodeUserPrefix make a node's identity, as the Node
	// authorizer knows it.
	NodesGroup     = "system:nodes"
	NodeUserPrefix = "system:node:"

	// ApprovedReason and DeniedReason are the Reason of the conditions the
	// approver writes; the Message says why.
	ApprovedReason = "AnvilApproved"
	DeniedReason   = "AnvilDenied"
)

// Key sizes the approver accepts. Smaller RSA keys are weak; larger ones
// only cost every TLS handshake with the node.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// Verdict is what Decide concluded about a CSR.
type Verdict int

const (
	// Skip: not the approver's to decide — another signer, a requester
	// another approver serves, or already decided.
	Skip Verdict = iota
	// Pending: the approver's, but not yet decidable; look again later
	// (the Node it names does not exist yet, or could not be looked up).
	Pending
	// Approve the CSR.
	Approve
	// Deny the CSR.
	Deny
)

func (v Verdict) String() string {
	switch v {
	case Skip:
		return "skip"
	case Pending:
		return "pending"
	case Approve:
		return "approve"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Facts are what Decide knows of the cluster besides the CSR.
type Facts struct {
	// Node returns the Node of that name, or nil when none exists; an
	// error when it cannot tell, which leaves the CSR pending. A bootstrap
	// CSR is approved on "none exists", so the answer must not come from a
	// cache that may lag behind a Node just registered.
	Node func(name string) (*corev1.Node, error)
	// OwnBootstrapApproval: anvil is the only approver of bootstrap client
	// CSRs (see Options).
	OwnBootstrapApproval bool
}

func (f Facts) node(name string) (*corev1.Node, error) {
	if f.Node == nil {
		return nil, errors.New("no way to look Nodes up")
	}
	return f.Node(name)
}

// Decide is the approver's whole policy: what to do with csr given facts,
// and why, in words fit for the CSR's condition message (`kubectl describe
// csr` shows them). It never modifies csr.
func Decide(csr *certificatesv1.CertificateSigningRequest, facts Facts) (Verdict, string) {
	if why := decided(csr); why != "" {
		return Skip, why
	}
	switch csr.Spec.SignerName {
	case certificatesv1.KubeletServingSignerName:
		return decideServing(csr, facts)
	case certificatesv1.KubeAPIServerClientKubeletSignerName:
		return decideClient(csr, facts)
	}
	return Skip, fmt.Sprintf("signer %q is not one the approver decides", csr.Spec.SignerName)
}

// decided says how csr was already decided, or "" when it was not.
func decided(csr *certificatesv1.CertificateSigningRequest) string {
	for _, c := range csr.Status.Conditions {
		if c.Status == corev1.ConditionFalse {
			continue
		}
		switch c.Type {
		case certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return "already " + strings.ToLower(string(c.Type))
		}
	}
	if len(csr.Status.Certificate) > 0 {
		return "already issued"
	}
	return ""
}

// kubeletUsages are the usage sets a kubelet's certificate may ask for
// with the one extended usage ext, as the controller-manager's signer
// checks them: key encipherment only matters to RSA keys, so it is
// optional.
func kubeletUsages(ext certificatesv1.KeyUsage) [][]certificatesv1.KeyUsage {
	return [][]certificatesv1.KeyUsage{
		{certificatesv1.UsageDigitalSignature, ext},
		{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, ext},
	}
}

func decideServing(csr *certificatesv1.CertificateSigningRequest, f Facts) (Verdict, string) {
	name, isNode := nodeOf(csr.Spec.Username, csr.Spec.Groups)
	if !isNode {
		return Deny, fmt.Sprintf("kubelet serving certificates are for nodes only: requester %q is not system:node:NAME in group %s", csr.Spec.Username, NodesGroup)
	}
	req, why := parseRequest(csr)
	if why == "" {
		why = checkSubject(req, name)
	}
	if why == "" {
		why = checkUsages(csr.Spec.Usages, kubeletUsages(certificatesv1.UsageServerAuth), "digital signature, [key encipherment,] server auth")
	}
	if why == "" {
		switch {
		case len(req.EmailAddresses) > 0:
			why = fmt.Sprintf("email SANs %v are not allowed", req.EmailAddresses)
		case len(req.URIs) > 0:
			why = fmt.Sprintf("URI SANs %v are not allowed", req.URIs)
		case len(req.DNSNames) == 0 && len(req.IPAddresses) == 0:
			why = "it names no DNS or IP SAN"
		}
	}
	if why != "" {
		return Deny, fmt.Sprintf("kubelet serving certificate of node %s: %s", name, why)
	}

	node, err := f.node(name)
	switch {
	case err != nil:
		return Pending, fmt.Sprintf("kubelet serving certificate of node %s: cannot look its Node up: %v", name, err)
	case node == nil:
		return Pending, fmt.Sprintf("kubelet serving certificate of node %s: its Node does not exist yet", name)
	case len(node.Status.Addresses) == 0:
		return Pending, fmt.Sprintf("kubelet serving certificate of node %s: its Node reports no addresses yet", name)
	}
	var sans []string
	for _, d := range req.DNSNames {
		if !hasName(node, d) {
			return Deny, fmt.Sprintf("kubelet serving certificate of node %s: DNS SAN %q is not one of the Node's addresses (%s)", name, d, addressList(node))
		}
		sans = append(sans, d)
	}
	for _, ip := range req.IPAddresses {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || !hasIP(node, a.Unmap()) {
			return Deny, fmt.Sprintf("kubelet serving certificate of node %s: IP SAN %s is not one of the Node's addresses (%s)", name, ip, addressList(node))
		}
		sans = append(sans, a.Unmap().String())
	}
	return Approve, fmt.Sprintf("kubelet serving certificate of node %s for %s, each an address its Node reports", name, strings.Join(sans, ", "))
}

func decideClient(csr *certificatesv1.CertificateSigningRequest, f Facts) (Verdict, string) {
	user, groups := csr.Spec.Username, csr.Spec.Groups
	if name, isNode := nodeOf(user, groups); isNode {
		req, why := parseRequest(csr)
		if why == "" {
			why = checkClientRequest(req, csr.Spec.Usages, name)
		}
		if why != "" {
			return Deny, fmt.Sprintf("client certificate renewal by node %s: %s", name, why)
		}
		return Approve, fmt.Sprintf("node %s renewing its own client certificate", name)
	}
	if !strings.HasPrefix(user, bootstrapapi.BootstrapUserPrefix) && !slices.Contains(groups, bootstrapapi.BootstrapDefaultGroup) {
		return Skip, fmt.Sprintf("requester %q is neither a node nor a bootstrap token", user)
	}
	token := strings.TrimPrefix(user, bootstrapapi.BootstrapUserPrefix)

	var bound []string
	for _, g := range groups {
		if !strings.HasPrefix(g, NodeBootstrapGroupPrefix) {
			continue
		}
		name, err := NodeFromBootstrapGroup(g)
		if err != nil {
			return Deny, fmt.Sprintf("bootstrap token %s: %v", token, err)
		}
		if !slices.Contains(bound, name) {
			bound = append(bound, name)
		}
	}
	switch {
	case len(bound) > 1:
		return Deny, fmt.Sprintf("bootstrap token %s is bound to several nodes (%s); a join token is for one node", token, strings.Join(bound, ", "))
	case len(bound) == 0 && slices.Contains(groups, DefaultBootstrapGroup) && !f.OwnBootstrapApproval:
		return Skip, fmt.Sprintf("bootstrap token %s is in %s, whose CSRs the controller-manager approves", token, DefaultBootstrapGroup)
	case len(bound) == 0 && f.OwnBootstrapApproval:
		return Deny, fmt.Sprintf("bootstrap token %s is bound to no node (no group %sNAME), and anvil approves client certificates only for tokens made for one node's join", token, NodeBootstrapGroupPrefix)
	case len(bound) == 0:
		return Deny, fmt.Sprintf("bootstrap token %s is neither bound to a node (no group %sNAME) nor in %s", token, NodeBootstrapGroupPrefix, DefaultBootstrapGroup)
	}

	name := bound[0]
	req, why := parseRequest(csr)
	if why == "" {
		why = checkClientRequest(req, csr.Spec.Usages, name)
	}
	if why != "" {
		return Deny, fmt.Sprintf("bootstrap token %s, bound to node %s: %s", token, name, why)
	}
	node, err := f.node(name)
	switch {
	case err != nil:
		return Pending, fmt.Sprintf("bootstrap token %s, bound to node %s: cannot look the Node up: %v", token, name, err)
	case node != nil:
		return Deny, fmt.Sprintf("bootstrap token %s, bound to node %s: Node %s already exists, and a join token must not mint an existing node's identity", token, name, name)
	}
	return Approve, fmt.Sprintf("bootstrap token %s, bound to node %s, which does not exist yet", token, name)
}

// nodeOf says whether user and groups are a node's identity, and which.
func nodeOf(user string, groups []string) (string, bool) {
	name, ok := strings.CutPrefix(user, NodeUserPrefix)
	if !ok || name == "" || !slices.Contains(groups, NodesGroup) {
		return "", false
	}
	return name, true
}

// NodeBootstrapGroup is the extra group of a bootstrap token made for the
// join of node name. Bootstrap token groups may not hold '.', which node
// names may, and node names may not hold ':', so each '.' becomes ':'.
func NodeBootstrapGroup(name string) (string, error) {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", fmt.Errorf("node name %q: %s", name, strings.Join(errs, "; "))
	}
	g := NodeBootstrapGroupPrefix + strings.ReplaceAll(name, ".", ":")
	// The bootstrap token authenticator rejects a token with a group
	// longer than system:bootstrappers: plus 256 characters.
	if limit := len(bootstrapapi.BootstrapDefaultGroup) + 1 + 256; len(g) > limit {
		return "", fmt.Errorf("node name %q is too long to bind a bootstrap token to (at most %d characters)", name, limit-len(NodeBootstrapGroupPrefix))
	}
	return g, nil
}

// NodeFromBootstrapGroup is the node a NodeBootstrapGroup binds a token to.
func NodeFromBootstrapGroup(group string) (string, error) {
	enc, ok := strings.CutPrefix(group, NodeBootstrapGroupPrefix)
	if !ok {
		return "", fmt.Errorf("group %q does not start with %s", group, NodeBootstrapGroupPrefix)
	}
	name := strings.ReplaceAll(enc, ":", ".")
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", fmt.Errorf("group %q names no valid node: %s", group, strings.Join(errs, "; "))
	}
	return name, nil
}

// parseRequest reads the CSR's one PEM block and checks that its signature
// holds (the requester has the key) and that the key is one a node should
// have.
func parseRequest(csr *certificatesv1.CertificateSigningRequest) (*x509.CertificateRequest, string) {
	block, rest := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, "spec.request is not a PEM CERTIFICATE REQUEST"
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, "spec.request holds more than one PEM block"
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Sprintf("spec.request does not parse: %v", err)
	}
	switch k := req.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return nil, fmt.Sprintf("its RSA key has %d bits, not %d to %d", bits, minRSABits, maxRSABits)
		}
	case *ecdsa.PublicKey:
		switch c := k.Curve.Params().Name; c {
		case "P-256", "P-384", "P-521":
		default:
			return nil, fmt.Sprintf("its ECDSA key is on curve %s, not P-256, P-384 or P-521", c)
		}
	case ed25519.PublicKey:
		return nil, "its key is Ed25519; the signer issues for ECDSA or RSA keys"
	default:
		return nil, fmt.Sprintf("its key is a %T, not ECDSA or RSA", k)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Sprintf("its signature does not verify: %v", err)
	}
	return req, ""
}

// checkSubject wants exactly CN=system:node:NAME, O=system:nodes.
func checkSubject(req *x509.CertificateRequest, name string) string {
	want := NodeUserPrefix + name
	switch {
	case req.Subject.CommonName != want:
		return fmt.Sprintf("subject CN is %q, not %q", req.Subject.CommonName, want)
	case !slices.Equal(req.Subject.Organization, []string{NodesGroup}):
		return fmt.Sprintf("subject O is %q, not [%s]", req.Subject.Organization, NodesGroup)
	case len(req.Subject.Names) != 2:
		return fmt.Sprintf("subject %q has attributes besides CN and O", req.Subject.String())
	}
	return ""
}

func checkClientRequest(req *x509.CertificateRequest, usages []certificatesv1.KeyUsage, name string) string {
	if why := checkSubject(req, name); why != "" {
		return why
	}
	if len(req.DNSNames)+len(req.IPAddresses)+len(req.EmailAddresses)+len(req.URIs) > 0 {
		return "a client certificate has no SANs"
	}
	return checkUsages(usages, kubeletUsages(certificatesv1.UsageClientAuth), "digital signature, [key encipherment,] client auth")
}

// checkUsages wants usages to be, as a set, one of allowed.
func checkUsages(usages []certificatesv1.KeyUsage, allowed [][]certificatesv1.KeyUsage, want string) string {
	got := slices.Clone(usages)
	slices.Sort(got)
	got = slices.Compact(got)
	for _, a := range allowed {
		a = slices.Clone(a)
		slices.Sort(a)
		if slices.Equal(got, a) {
			return ""
		}
	}
	return fmt.Sprintf("usages %q are not exactly %s", usages, want)
}

func hasName(n *corev1.Node, dns string) bool {
	for _, a := range n.Status.Addresses {
		if _, err := netip.ParseAddr(a.Address); err != nil && strings.EqualFold(a.Address, dns) {
			return true
		}
	}
	return false
}

func hasIP(n *corev1.Node, ip netip.Addr) bool {
	for _, a := range n.Status.Addresses {
		if na, err := netip.ParseAddr(a.Address); err == nil && na.Unmap() == ip {
			return true
		}
	}
	return false
}

func addressList(n *corev1.Node) string {
	var out []string
	for _, a := range n.Status.Addresses {
		out = append(out, string(a.Type)+" "+a.Address)
	}
	return strings.Join(out, ", ")
}
