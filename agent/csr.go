package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/internal/backoff"
	"anvil.dev/anvil/pki"
)

const csrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests"

// Errors of the CSR flow, for errors.Is.
var (
	ErrCSRDenied  = errors.New("certificate signing request denied")
	ErrCSRTimeout = errors.New("certificate signing request not signed in time")
)

// csrRequest says what certificate to ask for.
type csrRequest struct {
	NodeName string
	Key      crypto.Signer
	// Wait bounds the wait for approval and signature.
	Wait time.Duration
	// Poll is how often the CSR is read while waiting.
	Poll time.Duration
	// ExpirationSeconds asks the signer for a shorter certificate; zero
	// leaves it to the controller-manager's --cluster-signing-duration.
	ExpirationSeconds int32
	Log               *slog.Logger
}

// requestNodeCertificate asks the CSR API for a client certificate for
// system:node:NodeName with the signer the controller-manager signs for
// nodes (kubernetes.io/kube-apiserver-client-kubelet): with the bootstrap
// token for a new node, by the node itself for a renewal. anvil's approver
// approves it for a token bound to this node, the controller-manager for
// a token bound to none.
// The private key never leaves this machine; only its CSR is sent. It
// returns the issued certificate in PEM once it matches the key.
func requestNodeCertificate(ctx context.Context, c *apiClient, r csrRequest) ([]byte, error) {
	if r.Poll == 0 {
		r.Poll = 500 * time.Millisecond
	}
	if r.Wait == 0 {
		r.Wait = 2 * time.Minute
	}
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	csr, err := newNodeCSR(r)
	if err != nil {
		return nil, err
	}
	name := csr.Name
	if err := c.do(ctx, "POST", csrPath, contentJSON, csr, nil); err != nil && !isAlreadyExists(err) {
		switch {
		case isUnauthorized(err):
			return nil, fmt.Errorf("create CSR %s: %w: it has expired or was deleted (%v)", name, ErrTokenRejected, err)
		case isForbidden(err):
			return nil, fmt.Errorf("create CSR %s: the apiserver forbids it (is the node-bootstrapper RBAC in place?): %w", name, err)
		}
		return nil, fmt.Errorf("create CSR %s: %w", name, err)
	}
	r.Log.Debug("certificate signing request created", "csr", name)
	return waitIssued(ctx, c, r, name)
}

// newNodeCSR is the CertificateSigningRequest of r's key for the node's
// client certificate.
func newNodeCSR(r csrRequest) (*certificatesv1.CertificateSigningRequest, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: NodeUser(r.NodeName), Organization: []string{NodesGroup}},
	}, r.Key)
	if err != nil {
		return nil, fmt.Errorf("make the CSR of node %s: %w", r.NodeName, err)
	}
	sum := sha256.Sum256(der)
	usages := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	if _, isRSA := r.Key.(*rsa.PrivateKey); isRSA {
		usages = append([]certificatesv1.KeyUsage{certificatesv1.UsageKeyEncipherment}, usages...)
	}
	csr := &certificatesv1.CertificateSigningRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "certificates.k8s.io/v1", Kind: "CertificateSigningRequest"},
		// Named after its content, so a retried POST finds its own CSR.
		ObjectMeta: metav1.ObjectMeta{Name: "node-csr-" + hex.EncodeToString(sum[:12])},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
			Usages:     usages,
		},
	}
	if r.ExpirationSeconds > 0 {
		csr.Spec.ExpirationSeconds = &r.ExpirationSeconds
	}
	return csr, nil
}

// waitIssued reads the CSR called name every r.Poll until it is signed,
// denied or failed, or r.Wait has passed; it returns the certificate once
// it matches the key.
func waitIssued(ctx context.Context, c *apiClient, r csrRequest, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.Wait)
	defer cancel()
	state := "not yet approved"
	for {
		var got certificatesv1.CertificateSigningRequest
		err := c.do(ctx, "GET", csrPath+"/"+name, "", nil, &got)
		switch {
		case err == nil:
			if cond, ok := csrCondition(&got, certificatesv1.CertificateDenied); ok {
				return nil, fmt.Errorf("CSR %s of node %s: %w: %s %s", name, r.NodeName, ErrCSRDenied, cond.Reason, cond.Message)
			}
			if cond, ok := csrCondition(&got, certificatesv1.CertificateFailed); ok {
				return nil, fmt.Errorf("CSR %s of node %s failed: %s %s", name, r.NodeName, cond.Reason, cond.Message)
			}
			if _, ok := csrCondition(&got, certificatesv1.CertificateApproved); ok {
				state = "approved but not signed"
			}
			if len(got.Status.Certificate) > 0 {
				if err := checkIssued(got.Status.Certificate, r.Key, r.NodeName); err != nil {
					return nil, fmt.Errorf("CSR %s: %w", name, err)
				}
				return got.Status.Certificate, nil
			}
		case ctx.Err() != nil:
		case isUnauthorized(err):
			return nil, fmt.Errorf("read CSR %s: %w (%v)", name, ErrTokenRejected, err)
		default:
			r.Log.Debug("reading CSR", "csr", name, "err", err)
		}
		if !backoff.Sleep(ctx, r.Poll) {
			return nil, fmt.Errorf("CSR %s of node %s is %s after %s: %w; anvil's approver (anvil-approver on the masters) approves node CSRs of tokens bound to a node, the controller-manager those of other tokens, and the controller-manager signs them (its csrsigning controller, --cluster-signing-cert-file): check that both run, and for an unbound token that the node-autoapprove RBAC exists",
				name, r.NodeName, state, r.Wait, ErrCSRTimeout)
		}
	}
}

func csrCondition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) (certificatesv1.CertificateSigningRequestCondition, bool) {
	for _, c := range csr.Status.Conditions {
		if c.Type == t && c.Status != corev1.ConditionFalse {
			return c, true
		}
	}
	return certificatesv1.CertificateSigningRequestCondition{}, false
}

// checkIssued makes sure the signer issued what was asked: the key is
// ours, the subject the node's, and it is a client certificate now valid.
func checkIssued(certPEM []byte, key crypto.Signer, nodeName string) error {
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return fmt.Errorf("issued certificate: %w", err)
	}
	c := certs[0]
	pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return errors.New("issued certificate is for another key")
	}
	if c.Subject.CommonName != NodeUser(nodeName) {
		return fmt.Errorf("issued certificate is for %q, want %q", c.Subject.CommonName, NodeUser(nodeName))
	}
	if now := time.Now(); now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return fmt.Errorf("issued certificate is valid from %s to %s, not now", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
