package approver_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/master"
)

// request is the content of a PKCS#10 request to make.
type request struct {
	key      crypto.Signer
	cn       string
	org, ou  []string
	dns, ips []string
	emails   []string
	uris     []string
	tamper   bool // flip a bit of the signature
	// swapKey replaces the public key after signing, as a client that
	// cannot sign for it would.
	swapKey   crypto.PublicKey
	pemBlocks int // 0 or 1: one block; 2: a second block after it
}

func (r request) pem(t testing.TB) []byte {
	t.Helper()
	org := r.org
	if org == nil {
		org = []string{approver.NodesGroup}
	}
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: r.cn, Organization: org, OrganizationalUnit: r.ou},
		DNSNames:       r.dns,
		EmailAddresses: r.emails,
	}
	for _, ip := range r.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	for _, u := range r.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, r.key)
	if err != nil {
		t.Fatalf("make CSR: %v", err)
	}
	if r.swapKey != nil {
		der = swapPublicKey(t, der, r.swapKey)
	}
	if r.tamper {
		der[len(der)-3] ^= 0x01 // inside the signature, the last field
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if r.pemBlocks == 2 {
		out = append(out, out...)
	}
	return out
}

// swapPublicKey puts pub in the request der in place of its own key.
func swapPublicKey(t testing.TB, der []byte, pub crypto.PublicKey) []byte {
	t.Helper()
	var csr struct {
		Info struct {
			Version                        int
			Subject, PublicKey, Attributes asn1.RawValue
		}
		Algorithm asn1.RawValue
		Signature asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &csr); err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	csr.Info.PublicKey = asn1.RawValue{FullBytes: spki}
	out, err := asn1.Marshal(csr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// keys are made once per test: RSA generation is slow.
type keys struct {
	p256, p384, p224 *ecdsa.PrivateKey
	rsa2048, rsa1024 *rsa.PrivateKey
	ed               ed25519.PrivateKey
	rsaHuge          crypto.PublicKey
}

func newKeys(t testing.TB) keys {
	t.Helper()
	var k keys
	var err error
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	k.p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	k.p224, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	must(err)
	k.rsa2048, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa1024, err = rsa.GenerateKey(rand.Reader, 1024)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	// A 9000-bit modulus nobody holds the key of: the approver must refuse
	// its size whatever the signature.
	n := new(big.Int).Lsh(big.NewInt(1), 8999)
	k.rsaHuge = &rsa.PublicKey{N: n.Add(n, big.NewInt(1)), E: 65537}
	return k
}

func csrOf(t testing.TB, signer, user string, groups []string, usages []certificatesv1.KeyUsage, r request) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-test"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    r.pem(t),
			SignerName: signer,
			Usages:     usages,
			Username:   user,
			Groups:     groups,
		},
	}
}

var errLookup = errors.New("apiserver unavailable")

// nodesFixture: w1 and w2 are registered, w0 has no addresses yet,
// "broken" cannot be looked up, any other name does not exist.
func nodesFixture() func(string) (*corev1.Node, error) {
	nodes := map[string]*corev1.Node{
		"w1": {ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "w1"},
			{Type: corev1.NodeInternalIP, Address: "10.0.0.21"},
			{Type: corev1.NodeInternalIP, Address: "fd00::21"},
			{Type: corev1.NodeInternalDNS, Address: "w1.lab.example"},
		}}},
		"w2": {ObjectMeta: metav1.ObjectMeta{Name: "w2"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "w2"},
			{Type: corev1.NodeInternalIP, Address: "10.0.0.22"},
		}}},
		"w0": {ObjectMeta: metav1.ObjectMeta{Name: "w0"}},
	}
	return func(name string) (*corev1.Node, error) {
		if name == "broken" {
			return nil, errLookup
		}
		return nodes[name], nil
	}
}

func TestDecide(t *testing.T) {
	k := newKeys(t)
	const (
		serving = certificatesv1.KubeletServingSignerName
		client  = certificatesv1.KubeAPIServerClientKubeletSignerName
	)
	var (
		ds, ke, sa, ca = certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth
		servingUsages  = []certificatesv1.KeyUsage{ds, sa}
		clientUsages   = []certificatesv1.KeyUsage{ds, ca}
		nodeGroups     = []string{approver.NodesGroup, "system:authenticated"}
	)
	boundTo := func(names ...string) []string {
		g := []string{"system:bootstrappers", "system:authenticated"}
		for _, n := range names {
			bg, err := approver.NodeBootstrapGroup(n)
			if err != nil {
				t.Fatal(err)
			}
			g = append(g, bg)
		}
		return g
	}
	const token = "system:bootstrap:abcdef"
	defaultToken := []string{"system:bootstrappers", approver.DefaultBootstrapGroup, "system:authenticated"}
	w1 := request{key: k.p256, cn: "system:node:w1", dns: []string{"w1", "w1.lab.example"}, ips: []string{"10.0.0.21", "fd00::21"}}
	with := func(r request, f func(*request)) request { f(&r); return r }
	decided := func(c *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequest {
		c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: typ, Status: corev1.ConditionTrue})
		return c
	}

	tests := []struct {
		name string
		csr  *certificatesv1.CertificateSigningRequest
		want approver.Verdict
		// why is a piece of the reason, so a test fails on the right rule.
		why string
		// own is Facts.OwnBootstrapApproval.
		own bool
	}{
		// Kubelet serving certificates.
		{"serving: the node's own names and IPs", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, w1),
			approver.Approve, "w1, w1.lab.example, 10.0.0.21, fd00::21", false},
		{"serving: RSA 2048 with key encipherment", csrOf(t, serving, "system:node:w1", nodeGroups, []certificatesv1.KeyUsage{ke, ds, sa}, with(w1, func(r *request) { r.key = k.rsa2048 })),
			approver.Approve, "each an address its Node reports", false},
		{"serving: P-384, one IP", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.key, r.dns, r.ips = k.p384, nil, []string{"10.0.0.21"} })),
			approver.Approve, "for 10.0.0.21,", false},
		{"serving: DNS SAN in other case", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.dns, r.ips = []string{"W1.Lab.Example"}, nil })),
			approver.Approve, "", false},
		{"serving: SAN not the node's", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.dns = append(r.dns, "kubernetes.default.svc") })),
			approver.Deny, `DNS SAN "kubernetes.default.svc" is not one of the Node's addresses`, false},
		{"serving: IP of another node", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.ips = append(r.ips, "10.0.0.22") })),
			approver.Deny, "IP SAN 10.0.0.22 is not one of the Node's addresses", false},
		{"serving: another node's name as DNS SAN", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.dns = []string{"w2"} })),
			approver.Deny, `DNS SAN "w2"`, false},
		{"serving: an IP as a DNS SAN does not match the node's IP", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.dns, r.ips = []string{"10.0.0.21"}, nil })),
			approver.Deny, `DNS SAN "10.0.0.21"`, false},
		{"serving: extra usage client auth", csrOf(t, serving, "system:node:w1", nodeGroups, []certificatesv1.KeyUsage{ds, sa, ca}, w1),
			approver.Deny, "usages", false},
		{"serving: no server auth", csrOf(t, serving, "system:node:w1", nodeGroups, []certificatesv1.KeyUsage{ds, ke}, w1),
			approver.Deny, "usages", false},
		{"serving: client usages only", csrOf(t, serving, "system:node:w1", nodeGroups, clientUsages, w1),
			approver.Deny, "usages", false},
		{"serving: wrong CN (another node's)", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.cn = "system:node:w2" })),
			approver.Deny, `subject CN is "system:node:w2", not "system:node:w1"`, false},
		{"serving: wrong O", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.org = []string{"system:masters"} })),
			approver.Deny, "subject O", false},
		{"serving: O with an extra group", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.org = []string{approver.NodesGroup, "system:masters"} })),
			approver.Deny, "subject O", false},
		{"serving: extra subject attribute", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.ou = []string{"ops"} })),
			approver.Deny, "attributes besides CN and O", false},
		{"serving: email SAN", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.emails = []string{"root@w1"} })),
			approver.Deny, "email SANs", false},
		{"serving: URI SAN", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.uris = []string{"spiffe://cluster/w1"} })),
			approver.Deny, "URI SANs", false},
		{"serving: no SAN", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.dns, r.ips = nil, nil })),
			approver.Deny, "no DNS or IP SAN", false},
		{"serving: requester not a node", csrOf(t, serving, "kubernetes-admin", []string{"kubeadm:cluster-admins"}, servingUsages, w1),
			approver.Deny, "for nodes only", false},
		{"serving: requester a bootstrap token", csrOf(t, serving, token, boundTo("w1"), servingUsages, w1),
			approver.Deny, "for nodes only", false},
		{"serving: node user without the nodes group", csrOf(t, serving, "system:node:w1", []string{"system:authenticated"}, servingUsages, w1),
			approver.Deny, "for nodes only", false},
		{"serving: RSA 1024", csrOf(t, serving, "system:node:w1", nodeGroups, []certificatesv1.KeyUsage{ke, ds, sa}, with(w1, func(r *request) { r.key = k.rsa1024 })),
			approver.Deny, "RSA key has 1024 bits", false},
		{"serving: RSA 9000", csrOf(t, serving, "system:node:w1", nodeGroups, []certificatesv1.KeyUsage{ke, ds, sa}, with(w1, func(r *request) { r.key, r.swapKey = k.rsa2048, k.rsaHuge })),
			approver.Deny, "RSA key has 9000 bits", false},
		{"serving: P-224", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.key = k.p224 })),
			approver.Deny, "curve P-224", false},
		{"serving: Ed25519", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.key = k.ed })),
			approver.Deny, "Ed25519", false},
		{"serving: signature does not verify", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.tamper = true })),
			approver.Deny, "signature does not verify", false},
		{"serving: two PEM blocks", csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.pemBlocks = 2 })),
			approver.Deny, "more than one PEM block", false},
		{"serving: Node does not exist yet", csrOf(t, serving, "system:node:w3", nodeGroups, servingUsages, with(w1, func(r *request) { r.cn, r.dns, r.ips = "system:node:w3", []string{"w3"}, nil })),
			approver.Pending, "its Node does not exist yet", false},
		{"serving: malformed and Node missing: deny at once", csrOf(t, serving, "system:node:w3", nodeGroups, []certificatesv1.KeyUsage{ds, sa, ca}, with(w1, func(r *request) { r.cn = "system:node:w3" })),
			approver.Deny, "usages", false},
		{"serving: Node has no addresses yet", csrOf(t, serving, "system:node:w0", nodeGroups, servingUsages, with(w1, func(r *request) { r.cn, r.dns, r.ips = "system:node:w0", []string{"w0"}, nil })),
			approver.Pending, "reports no addresses yet", false},
		{"serving: Node lookup fails", csrOf(t, serving, "system:node:broken", nodeGroups, servingUsages, with(w1, func(r *request) { r.cn = "system:node:broken" })),
			approver.Pending, "apiserver unavailable", false},
		{"serving: already approved", decided(csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, w1), certificatesv1.CertificateApproved),
			approver.Skip, "already approved", false},
		{"serving: already denied, would be approved now", decided(csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, w1), certificatesv1.CertificateDenied),
			approver.Skip, "already denied", false},
		{"serving: already failed", decided(csrOf(t, serving, "system:node:w1", nodeGroups, servingUsages, with(w1, func(r *request) { r.dns = []string{"evil"} })), certificatesv1.CertificateFailed),
			approver.Skip, "already failed", false},

		// Node client certificates: renewals.
		{"client: node renewing its own", csrOf(t, client, "system:node:w1", nodeGroups, clientUsages, request{key: k.p256, cn: "system:node:w1"}),
			approver.Approve, "node w1 renewing its own", false},
		{"client: node renewing its own, RSA", csrOf(t, client, "system:node:w1", nodeGroups, []certificatesv1.KeyUsage{ke, ds, ca}, request{key: k.rsa2048, cn: "system:node:w1"}),
			approver.Approve, "renewing its own", false},
		{"client: renewal of a node whose Node is gone", csrOf(t, client, "system:node:w9", nodeGroups, clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Approve, "renewing its own", false},
		{"client: node asking for another node's identity", csrOf(t, client, "system:node:w1", nodeGroups, clientUsages, request{key: k.p256, cn: "system:node:w2"}),
			approver.Deny, `subject CN is "system:node:w2", not "system:node:w1"`, false},
		{"client: node renewal with server auth", csrOf(t, client, "system:node:w1", nodeGroups, []certificatesv1.KeyUsage{ds, ca, sa}, request{key: k.p256, cn: "system:node:w1"}),
			approver.Deny, "usages", false},
		{"client: node renewal with a SAN", csrOf(t, client, "system:node:w1", nodeGroups, clientUsages, request{key: k.p256, cn: "system:node:w1", dns: []string{"w1"}}),
			approver.Deny, "no SANs", false},
		{"client: node renewal as system:masters", csrOf(t, client, "system:node:w1", nodeGroups, clientUsages, request{key: k.p256, cn: "system:node:w1", org: []string{"system:masters"}}),
			approver.Deny, "subject O", false},

		// Node client certificates: bootstrap tokens bound to one node.
		{"client: bound token, new node", csrOf(t, client, token, boundTo("w9"), clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Approve, "bound to node w9, which does not exist yet", false},
		{"client: bound token, dotted node name", csrOf(t, client, token, boundTo("w9.lab.example"), clientUsages, request{key: k.p256, cn: "system:node:w9.lab.example"}),
			approver.Approve, "bound to node w9.lab.example", false},
		{"client: bound token, RSA", csrOf(t, client, token, boundTo("w9"), []certificatesv1.KeyUsage{ke, ds, ca}, request{key: k.rsa2048, cn: "system:node:w9"}),
			approver.Approve, "", false},
		{"client: bound token, also in the default group", csrOf(t, client, token, append(boundTo("w9"), approver.DefaultBootstrapGroup), clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Approve, "", false},
		{"client: bootstrapper for an existing node", csrOf(t, client, token, boundTo("w1"), clientUsages, request{key: k.p256, cn: "system:node:w1"}),
			approver.Deny, "Node w1 already exists", false},
		{"client: bootstrapper for an existing node without addresses", csrOf(t, client, token, boundTo("w0"), clientUsages, request{key: k.p256, cn: "system:node:w0"}),
			approver.Deny, "Node w0 already exists", false},
		{"client: bootstrapper for another name", csrOf(t, client, token, boundTo("w9"), clientUsages, request{key: k.p256, cn: "system:node:w8"}),
			approver.Deny, `subject CN is "system:node:w8", not "system:node:w9"`, false},
		{"client: bootstrapper for a non-node CN", csrOf(t, client, token, boundTo("w9"), clientUsages, request{key: k.p256, cn: "kubernetes-admin", org: []string{"system:masters"}}),
			approver.Deny, "subject CN", false},
		{"client: bound token with server auth", csrOf(t, client, token, boundTo("w9"), []certificatesv1.KeyUsage{ds, ca, sa}, request{key: k.p256, cn: "system:node:w9"}),
			approver.Deny, "usages", false},
		{"client: bound token with an IP SAN", csrOf(t, client, token, boundTo("w9"), clientUsages, request{key: k.p256, cn: "system:node:w9", ips: []string{"10.0.0.29"}}),
			approver.Deny, "no SANs", false},
		{"client: bound token, weak key", csrOf(t, client, token, boundTo("w9"), []certificatesv1.KeyUsage{ke, ds, ca}, request{key: k.rsa1024, cn: "system:node:w9"}),
			approver.Deny, "1024 bits", false},
		{"client: token bound to two nodes", csrOf(t, client, token, boundTo("w8", "w9"), clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Deny, "bound to several nodes (w8, w9)", false},
		{"client: bound twice to the same node", csrOf(t, client, token, append(boundTo("w9"), approver.NodeBootstrapGroupPrefix+"w9"), clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Approve, "", false},
		{"client: node group naming no valid node", csrOf(t, client, token, []string{"system:bootstrappers", approver.NodeBootstrapGroupPrefix + "-x"}, clientUsages, request{key: k.p256, cn: "system:node:-x"}),
			approver.Deny, "names no valid node", false},
		{"client: bound token, lookup fails", csrOf(t, client, token, boundTo("broken"), clientUsages, request{key: k.p256, cn: "system:node:broken"}),
			approver.Pending, "apiserver unavailable", false},
		{"client: bound token, already approved", decided(csrOf(t, client, token, boundTo("w1"), clientUsages, request{key: k.p256, cn: "system:node:w1"}), certificatesv1.CertificateApproved),
			approver.Skip, "already approved", false},

		// Bootstrap tokens without a node binding.
		{"client: default token, controller-manager decides", csrOf(t, client, token, defaultToken, clientUsages, request{key: k.p256, cn: "system:node:w1"}),
			approver.Skip, "controller-manager approves", false},
		{"client: default token, anvil the only approver", csrOf(t, client, token, defaultToken, clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Deny, "bound to no node", true},
		{"client: token of another group", csrOf(t, client, token, []string{"system:bootstrappers", "system:bootstrappers:ops"}, clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Deny, "neither bound to a node", false},
		{"client: bare bootstrapper, anvil the only approver", csrOf(t, client, token, []string{"system:bootstrappers"}, clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Deny, "bound to no node", true},

		// Not the approver's.
		{"client: requested by an administrator", csrOf(t, client, "kubernetes-admin", []string{"kubeadm:cluster-admins"}, clientUsages, request{key: k.p256, cn: "system:node:w9"}),
			approver.Skip, "neither a node nor a bootstrap token", false},
		{"another signer", csrOf(t, client, "system:node:w1", nodeGroups, clientUsages, request{key: k.p256, cn: "system:node:w1"}),
			approver.Skip, "signer", false},
	}
	// The last case's signer is set here: csrOf takes the kubelet's.
	tests[len(tests)-1].csr.Spec.SignerName = certificatesv1.KubeAPIServerClientSignerName

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.csr.DeepCopy()
			got, why := approver.Decide(tc.csr, approver.Facts{Node: nodesFixture(), OwnBootstrapApproval: tc.own})
			t.Logf("%s: %s", got, why)
			if got != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("Decide = %s %q, want %s with %q", got, why, tc.want, tc.why)
			}
			if why == "" {
				t.Error("no reason given")
			}
			if !equalCSR(before, tc.csr) {
				t.Error("Decide modified the CSR")
			}
		})
	}
}

func equalCSR(a, b *certificatesv1.CertificateSigningRequest) bool {
	return a.String() == b.String()
}

// TestDecideWithoutLookup: facts without a way to look Nodes up leave a
// CSR that needs one pending, rather than approving on "no such Node".
func TestDecideWithoutLookup(t *testing.T) {
	k := newKeys(t)
	csr := csrOf(t, certificatesv1.KubeAPIServerClientKubeletSignerName, "system:bootstrap:abcdef",
		[]string{"system:bootstrappers", approver.NodeBootstrapGroupPrefix + "w9"},
		[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		request{key: k.p256, cn: "system:node:w9"})
	if got, why := approver.Decide(csr, approver.Facts{}); got != approver.Pending {
		t.Errorf("Decide = %s %q, want pending", got, why)
	}
}

func TestNodeBootstrapGroup(t *testing.T) {
	for _, name := range []string{"w1", "lab-w1", "w1.lab.example", "a", strings.Repeat("n", 245)} {
		g, err := approver.NodeBootstrapGroup(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		// The bootstrap token authenticator rejects a token whose groups
		// do not pass this.
		if err := bootstraputil.ValidateBootstrapGroupName(g); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		back, err := approver.NodeFromBootstrapGroup(g)
		if err != nil || back != name {
			t.Errorf("%s: round trip gave %q, %v", name, back, err)
		}
	}
	for _, name := range []string{"", "W1", "w1_x", "-w1", "w1:x", strings.Repeat("n", 246)} {
		if g, err := approver.NodeBootstrapGroup(name); err == nil {
			t.Errorf("%q: made group %q, want an error", name, g)
		}
	}
	for _, g := range []string{"system:bootstrappers:anvil:node:", "system:bootstrappers:anvil:node:a::b", "system:bootstrappers:kubeadm:default-node-token"} {
		if n, err := approver.NodeFromBootstrapGroup(g); err == nil {
			t.Errorf("%q: read node %q, want an error", g, n)
		}
	}
	if approver.DefaultBootstrapGroup != master.NodeBootstrapGroup {
		t.Errorf("DefaultBootstrapGroup %q is not master's %q", approver.DefaultBootstrapGroup, master.NodeBootstrapGroup)
	}
}
