package approver_test

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/approver"
)

// TestApproverE2E runs the approver as system:anvil-approver, with nothing
// but its RBAC objects, against a real kube-apiserver and
// kube-controller-manager (which signs what is approved), and creates CSRs
// as the kubelets of nodes and with real bootstrap tokens.
func TestApproverE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	c := startCluster(t)
	c.createNode(t, "w1", "192.0.2.21")
	c.createNode(t, "w2", "192.0.2.22")
	w1 := c.nodeClient(t, "w1")

	const first = "e2e-approver-1"
	// Two retries only, so the CSR waiting for its Node below is brought
	// back by the Node's appearance, not by a retry.
	stop := c.startApprover(t, approver.Options{Identity: first, PendingRetries: 2, RetryMax: time.Second})
	c.waitLeader(t, first, 30*time.Second)

	var latencies []time.Duration // CSR created → approved by anvil
	approvedWithin := func(start, seen time.Time) {
		latencies = append(latencies, seen.Sub(start))
	}

	t.Run("serving certificate for the node's own addresses: approved and issued", func(t *testing.T) {
		r := request{key: newKey(t), cn: "system:node:w1", dns: []string{"w1"}, ips: []string{"192.0.2.21"}}
		start := createCSR(t, w1, "serving-w1", servingSigner, servingUsages, r)
		csr, seen := c.waitCSR(t, "serving-w1", 30*time.Second, decidedBy(certificatesv1.CertificateApproved, approver.ApprovedReason))
		approvedWithin(start, seen)
		t.Logf("approved after %s: %s", seen.Sub(start).Round(time.Millisecond), condition(csr, certificatesv1.CertificateApproved).Message)
		csr, _ = c.waitCSR(t, "serving-w1", 30*time.Second, issued)
		c.checkCert(t, csr, r, x509.ExtKeyUsageServerAuth)
	})

	denials := []struct {
		name, csr string
		r         request
		why       string
	}{
		{"a SAN not the node's", "serving-w1-kubernetes", request{cn: "system:node:w1", dns: []string{"w1", "kubernetes.default.svc"}}, `DNS SAN "kubernetes.default.svc" is not one of the Node's addresses`},
		{"the IP of another node", "serving-w1-ip-of-w2", request{cn: "system:node:w1", ips: []string{"192.0.2.21", "192.0.2.22"}}, "IP SAN 192.0.2.22 is not one of the Node's addresses"},
		{"an organization not system:nodes", "serving-w1-masters", request{cn: "system:node:w1", org: []string{"system:masters"}, dns: []string{"w1"}}, "subject O"},
	}
	for _, d := range denials {
		t.Run("serving certificate with "+d.name+": denied", func(t *testing.T) {
			d.r.key = newKey(t)
			createCSR(t, w1, d.csr, servingSigner, servingUsages, d.r)
			csr, _ := c.waitCSR(t, d.csr, 30*time.Second, decidedBy(certificatesv1.CertificateDenied, approver.DeniedReason))
			if msg := condition(csr, certificatesv1.CertificateDenied).Message; !strings.Contains(msg, d.why) {
				t.Errorf("denied with %q, want it to say %q", msg, d.why)
			}
		})
	}

	t.Run("serving certificate for a Node not registered yet: pending, approved once the Node appears", func(t *testing.T) {
		w3 := c.nodeClient(t, "w3")
		r := request{key: newKey(t), cn: "system:node:w3", dns: []string{"w3"}, ips: []string{"192.0.2.23"}}
		createCSR(t, w3, "serving-w3", servingSigner, servingUsages, r)
		time.Sleep(3 * time.Second) // past its two retries
		csr, err := c.admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), "serving-w3", metav1.GetOptions{})
		must(t, err)
		if len(csr.Status.Conditions) > 0 {
			t.Fatalf("decided before its Node exists: %+v", csr.Status.Conditions)
		}
		start := time.Now()
		c.createNode(t, "w3", "192.0.2.23")
		csr, seen := c.waitCSR(t, "serving-w3", 30*time.Second, decidedBy(certificatesv1.CertificateApproved, approver.ApprovedReason))
		t.Logf("approved %s after the Node appeared", seen.Sub(start).Round(time.Millisecond))
		csr, _ = c.waitCSR(t, csr.Name, 30*time.Second, issued)
		c.checkCert(t, csr, r, x509.ExtKeyUsageServerAuth)
	})

	t.Run("client certificate: a node renewing its own is approved and issued", func(t *testing.T) {
		r := request{key: newKey(t), cn: "system:node:w1"}
		createCSR(t, w1, "client-w1-renewal", clientSigner, clientUsages, r)
		// The controller-manager approves renewals too, as long as
		// kubeadm:node-autoapprove-certificate-rotation exists: either may
		// write first, never both.
		csr, _ := c.waitCSR(t, "client-w1-renewal", 30*time.Second, issued)
		t.Logf("approved by %s", condition(csr, certificatesv1.CertificateApproved).Reason)
		c.checkCert(t, csr, r, x509.ExtKeyUsageClientAuth)
	})

	t.Run("client certificate: a node renewing into system:masters is denied", func(t *testing.T) {
		createCSR(t, w1, "client-w1-masters", clientSigner, clientUsages, request{key: newKey(t), cn: "system:node:w1", org: []string{"system:masters"}})
		csr, _ := c.waitCSR(t, "client-w1-masters", 30*time.Second, decidedBy(certificatesv1.CertificateDenied, approver.DeniedReason))
		if msg := condition(csr, certificatesv1.CertificateDenied).Message; !strings.Contains(msg, "subject O") {
			t.Errorf("denied with %q", msg)
		}
	})

	// Decide denies these too (TestDecide), but the apiserver's
	// NodeRestriction admission, which anvil enables, refuses them first.
	t.Run("a node asking for another node's identity: refused at admission", func(t *testing.T) {
		for _, s := range []struct {
			signer string
			usages []certificatesv1.KeyUsage
			r      request
		}{
			{servingSigner, servingUsages, request{cn: "system:node:w2", dns: []string{"w2"}}},
			{clientSigner, clientUsages, request{cn: "system:node:w2"}},
		} {
			s.r.key = newKey(t)
			err := tryCreateCSR(t, w1, "w1-as-w2", s.signer, s.usages, s.r)
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s CSR of w1 for system:node:w2: %v, want forbidden", s.signer, err)
			}
		}
	})

	t.Run("bootstrap token bound to a new node: approved and issued", func(t *testing.T) {
		tok := c.tokenClient(t, c.boundToken(t, "w4"))
		r := request{key: newKey(t), cn: "system:node:w4"}
		start := createCSR(t, tok, "bootstrap-w4", clientSigner, clientUsages, r)
		csr, seen := c.waitCSR(t, "bootstrap-w4", 30*time.Second, decidedBy(certificatesv1.CertificateApproved, approver.ApprovedReason))
		approvedWithin(start, seen)
		if !slices.Contains(csr.Spec.Groups, approver.NodeBootstrapGroupPrefix+"w4") {
			t.Errorf("the apiserver gave the token groups %v", csr.Spec.Groups)
		}
		t.Logf("approved after %s: %s", seen.Sub(start).Round(time.Millisecond), condition(csr, certificatesv1.CertificateApproved).Message)
		csr, _ = c.waitCSR(t, "bootstrap-w4", 30*time.Second, issued)
		c.checkCert(t, csr, r, x509.ExtKeyUsageClientAuth)
	})

	t.Run("bootstrap token bound to a node asking for another name: denied", func(t *testing.T) {
		tok := c.tokenClient(t, c.boundToken(t, "w5"))
		createCSR(t, tok, "bootstrap-w5-as-w6", clientSigner, clientUsages, request{key: newKey(t), cn: "system:node:w6"})
		csr, _ := c.waitCSR(t, "bootstrap-w5-as-w6", 30*time.Second, decidedBy(certificatesv1.CertificateDenied, approver.DeniedReason))
		if msg := condition(csr, certificatesv1.CertificateDenied).Message; !strings.Contains(msg, `not "system:node:w5"`) {
			t.Errorf("denied with %q", msg)
		}
	})

	t.Run("bootstrap token bound to an existing node: denied", func(t *testing.T) {
		tok := c.tokenClient(t, c.boundToken(t, "w1"))
		createCSR(t, tok, "bootstrap-w1", clientSigner, clientUsages, request{key: newKey(t), cn: "system:node:w1"})
		csr, _ := c.waitCSR(t, "bootstrap-w1", 30*time.Second, decidedBy(certificatesv1.CertificateDenied, approver.DeniedReason))
		if msg := condition(csr, certificatesv1.CertificateDenied).Message; !strings.Contains(msg, "Node w1 already exists") {
			t.Errorf("denied with %q", msg)
		}
	})

	var cmLatency time.Duration
	t.Run("default-node-token CSR: left to the controller-manager", func(t *testing.T) {
		tok := c.tokenClient(t, c.cp.Token(t, time.Hour))
		start := createCSR(t, tok, "default-w7", clientSigner, clientUsages, request{key: newKey(t), cn: "system:node:w7"})
		_, seen := c.waitCSR(t, "default-w7", 30*time.Second, decidedBy(certificatesv1.CertificateApproved, "AutoApproved"))
		cmLatency = seen.Sub(start)
	})

	t.Run("the approver's identity may approve for the kubelet signers only", func(t *testing.T) {
		for _, a := range []struct {
			attrs authorizationv1.ResourceAttributes
			want  bool
		}{
			{authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers", Verb: "approve", Name: servingSigner}, true},
			{authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers", Verb: "approve", Name: clientSigner}, true},
			{authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers", Verb: "approve", Name: certificatesv1.KubeAPIServerClientSignerName}, false},
			{authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "signers", Verb: "sign", Name: servingSigner}, false},
			{authorizationv1.ResourceAttributes{Resource: "secrets", Verb: "get", Namespace: "kube-system"}, false},
			{authorizationv1.ResourceAttributes{Resource: "nodes", Verb: "update", Name: "w1"}, false},
			{authorizationv1.ResourceAttributes{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: "kube-node-lease", Name: "w1"}, false},
		} {
			sar, err := c.admin.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{User: approver.User, ResourceAttributes: &a.attrs},
			}, metav1.CreateOptions{})
			must(t, err)
			if sar.Status.Allowed != a.want {
				t.Errorf("%s %s/%s %q: allowed %v, want %v", a.attrs.Verb, a.attrs.Group, a.attrs.Resource, a.attrs.Name, sar.Status.Allowed, a.want)
			}
		}
	})

	// The approver alone: the controller-manager's auto-approval of
	// bootstrap and renewal CSRs is withdrawn, and a second instance takes
	// over the Lease the first releases.
	stop()
	c.deleteBinding(t, "kubeadm:node-autoapprove-bootstrap")
	c.deleteBinding(t, "kubeadm:node-autoapprove-certificate-rotation")
	const second = "e2e-approver-2"
	stopSecond := c.startApprover(t, approver.Options{Identity: second, OwnBootstrapApproval: true})
	c.waitLeader(t, second, 10*time.Second)

	t.Run("OwnBootstrapApproval: a default-node-token CSR is denied", func(t *testing.T) {
		tok := c.tokenClient(t, c.cp.Token(t, time.Hour))
		createCSR(t, tok, "default-w8", clientSigner, clientUsages, request{key: newKey(t), cn: "system:node:w8"})
		csr, _ := c.waitCSR(t, "default-w8", 30*time.Second, decidedBy(certificatesv1.CertificateDenied, approver.DeniedReason))
		if msg := condition(csr, certificatesv1.CertificateDenied).Message; !strings.Contains(msg, "bound to no node") {
			t.Errorf("denied with %q", msg)
		}
	})

	t.Run("OwnBootstrapApproval: a bound token and a renewal are approved by anvil", func(t *testing.T) {
		tok := c.tokenClient(t, c.boundToken(t, "w9"))
		r := request{key: newKey(t), cn: "system:node:w9"}
		start := createCSR(t, tok, "bootstrap-w9", clientSigner, clientUsages, r)
		_, seen := c.waitCSR(t, "bootstrap-w9", 30*time.Second, decidedBy(certificatesv1.CertificateApproved, approver.ApprovedReason))
		approvedWithin(start, seen)
		csr, _ := c.waitCSR(t, "bootstrap-w9", 30*time.Second, issued)
		c.checkCert(t, csr, r, x509.ExtKeyUsageClientAuth)

		r = request{key: newKey(t), cn: "system:node:w1"}
		createCSR(t, w1, "client-w1-renewal-2", clientSigner, clientUsages, r)
		c.waitCSR(t, "client-w1-renewal-2", 30*time.Second, decidedBy(certificatesv1.CertificateApproved, approver.ApprovedReason))
		csr, _ = c.waitCSR(t, "client-w1-renewal-2", 30*time.Second, issued)
		c.checkCert(t, csr, r, x509.ExtKeyUsageClientAuth)
	})

	t.Run("an instance that loses the Lease stops deciding, and decides again once it has it back", func(t *testing.T) {
		stopSecond()
		const third, thief = "e2e-approver-3", "e2e-thief"
		c.startApprover(t, approver.Options{Identity: third, LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond})
		c.waitLeader(t, third, 10*time.Second)

		// Another holder takes the Lease for 6 s; the approver cannot renew
		// and gives up leading after its 1.5 s renew deadline.
		c.stealLease(t, thief, 6*time.Second)
		time.Sleep(3 * time.Second)
		r := request{key: newKey(t), cn: "system:node:w1", dns: []string{"w1"}}
		createCSR(t, w1, "serving-w1-leaderless", servingSigner, servingUsages, r)
		time.Sleep(time.Second)
		csr, err := c.admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), "serving-w1-leaderless", metav1.GetOptions{})
		must(t, err)
		if len(csr.Status.Conditions) > 0 {
			t.Fatalf("decided while another instance held the Lease: %+v", csr.Status.Conditions)
		}
		c.waitLeader(t, third, 15*time.Second)
		c.waitCSR(t, "serving-w1-leaderless", 15*time.Second, decidedBy(certificatesv1.CertificateApproved, approver.ApprovedReason))
	})

	t.Logf("CSR created → approved: anvil %v; the controller-manager's csrapproving %v", latencies, cmLatency)
}
