package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"anvil.dev/anvil/internal/backoff"
	"anvil.dev/anvil/pki"
)

// clusterInfoURLPath is the one object anonymous clients may read (the
// apiserver's authentication config allows exactly this path).
const clusterInfoURLPath = "/api/v1/namespaces/" + metav1.NamespacePublic + "/configmaps/" + bootstrapapi.ConfigMapClusterInfo

// Errors of discovery and TLS bootstrap, for errors.Is.
var (
	// ErrTokenUnknown: cluster-info carries no signature for the token's
	// ID, which is what an expired or deleted token looks like from
	// outside.
	ErrTokenUnknown = errors.New("the bootstrap token has expired or does not exist")
	// ErrTokenMismatch: cluster-info is signed for the token's ID, but not
	// with this secret.
	ErrTokenMismatch = errors.New("the bootstrap token's secret is wrong")
	// ErrCAHashMismatch: the CA the server publishes is not the pinned one.
	ErrCAHashMismatch = errors.New("the cluster CA does not match --ca-cert-hash")
	// ErrImpostor: the server's certificate is not issued by the pinned CA.
	ErrImpostor = errors.New("the server's certificate is not issued by the pinned cluster CA")
	// ErrTokenRejected: the apiserver refused the token (401).
	ErrTokenRejected = errors.New("the apiserver refused the bootstrap token")
)

// ClusterInfo is what discovery learned and checked about the cluster.
type ClusterInfo struct {
	// Endpoint is the apiserver discovery talked to, now verified.
	Endpoint string
	// Server is the apiserver URL cluster-info names (the cluster's
	// endpoint, which may be a VIP or DNS name).
	Server string
	// CA is the pinned cluster CA, the only root anvil trusts from now on.
	CA    *x509.Certificate
	CAPEM []byte
}

// Servers are the apiserver URLs to use, endpoint first, without repeats.
func (ci *ClusterInfo) Servers(extra ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range append([]string{ci.Endpoint, ci.Server}, extra...) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// DiscoveryOptions are the inputs of Discover.
type DiscoveryOptions struct {
	// Endpoint is https://host:port of an apiserver.
	Endpoint string
	Token    pki.Token
	CAHash   pki.CAHash
	// Timeout bounds the wait for an apiserver that does not answer yet
	// (a master still starting); zero means two minutes.
	Timeout time.Duration
	// SignatureWait is how long a missing signature is waited for (the
	// controller-manager signs cluster-info for a new token within
	// seconds); zero means 15 seconds.
	SignatureWait time.Duration
	Log           *slog.Logger
}

// Discover learns the cluster's CA the way kubeadm's token discovery does,
// and stricter: it reads kube-public/cluster-info anonymously over TLS
// while trusting nothing, checks the JWS signature made with the token,
// checks that the CA it names is the pinned one and that the server's
// certificate is issued by that CA, then reads cluster-info again trusting
// only that CA. No credential is sent before all of that has passed: the
// token's secret is only used locally, to verify the signature.
func Discover(ctx context.Context, o DiscoveryOptions) (*ClusterInfo, error) {
	if o.Token.IsZero() {
		return nil, errors.New("discovery: no bootstrap token")
	}
	if o.CAHash.IsZero() {
		return nil, errors.New("discovery: no CA hash: pass --ca-cert-hash sha256:… (anvil certs ca-hash prints it on a master)")
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.SignatureWait == 0 {
		o.SignatureWait = 15 * time.Second
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	bo := backoff.New(500*time.Millisecond, 5*time.Second)
	var firstMissing time.Time
	for {
		ci, err := discoverOnce(ctx, o)
		switch {
		case err == nil:
			return ci, nil
		case errors.Is(err, ErrTokenUnknown):
			// A token made a moment ago is signed by the controller-manager
			// within seconds; wait that long, no more.
			if firstMissing.IsZero() {
				firstMissing = time.Now()
			}
			if time.Since(firstMissing) >= o.SignatureWait {
				return nil, err
			}
		case !isTransient(err):
			return nil, err
		}
		log.Info("discovery: retrying", "endpoint", o.Endpoint, "err", err)
		if !backoff.Sleep(ctx, bo.Next()) {
			if errors.Is(err, ErrTokenUnknown) {
				return nil, err
			}
			return nil, fmt.Errorf("discovery at %s: no answer within %s: %w", o.Endpoint, o.Timeout, err)
		}
	}
}

// discoveryError is a failure worth retrying: the server is not there or
// not ready yet.
type discoveryError struct{ err error }

func (e discoveryError) Error() string { return e.err.Error() }
func (e discoveryError) Unwrap() error { return e.err }

func isTransient(err error) bool {
	var d discoveryError
	return errors.As(err, &d)
}

func discoverOnce(ctx context.Context, o DiscoveryOptions) (*ClusterInfo, error) {
	// 1. Trust nothing, send nothing: no client certificate, no header.
	var peer []*x509.Certificate
	insecure := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // checked below against the pin, before anything is sent
			MinVersion:         tls.VersionTLS12,
			VerifyConnection: func(cs tls.ConnectionState) error {
				peer = cs.PeerCertificates
				return nil
			},
		},
		TLSHandshakeTimeout: 10 * time.Second,
		DisableKeepAlives:   true,
	}}
	content, sigs, err := fetchClusterInfo(ctx, insecure, o.Endpoint)
	if err != nil {
		return nil, err
	}

	// 2. The signature made with the token; 3. the pinned CA, and the
	// server's certificate chained to it.
	server, ca, err := verifyClusterInfo(o.Endpoint, content, sigs, o.Token, o.CAHash)
	if err != nil {
		return nil, err
	}
	if err := verifyPeer(peer, ca, o.Endpoint); err != nil {
		return nil, err
	}

	// 4. Again, trusting only the pinned CA; the content must not change.
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	secure := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		DisableKeepAlives:   true,
	}}
	again, _, err := fetchClusterInfo(ctx, secure, o.Endpoint)
	if err != nil {
		return nil, err
	}
	if again != content {
		return nil, discoveryError{fmt.Errorf("cluster-info at %s changed between two reads", o.Endpoint)}
	}
	return &ClusterInfo{Endpoint: o.Endpoint, Server: server, CA: ca, CAPEM: pki.EncodeCert(ca)}, nil
}

// verifyClusterInfo checks cluster-info as an untrusted server sent it:
// the JWS signature made with the token (the token's secret is only used
// here, locally), then the CA it publishes against the pin. It returns the
// server URL cluster-info names and the pinned CA.
func verifyClusterInfo(endpoint, content string, sigs map[string]string, tok pki.Token, pin pki.CAHash) (string, *x509.Certificate, error) {
	sig, ok := sigs[tok.ID()]
	if !ok {
		return "", nil, fmt.Errorf("cluster-info at %s has no signature for token ID %s: %w (it expired, at most 24 h after it was made, or was deleted after a join; make a new one on a master with `anvil token create --node NAME`)",
			endpoint, tok.ID(), ErrTokenUnknown)
	}
	if !jws.DetachedTokenIsValid(sig, content, tok.ID(), tok.Secret()) {
		return "", nil, fmt.Errorf("cluster-info at %s is not signed with token %s: %w (or the server is not the cluster it claims to be)",
			endpoint, tok, ErrTokenMismatch)
	}
	server, bundle, err := parseClusterInfo(content)
	if err != nil {
		return "", nil, fmt.Errorf("cluster-info at %s: %w", endpoint, err)
	}
	for _, c := range bundle {
		if pin.Matches(c) {
			return server, c, nil
		}
	}
	got := make([]string, 0, len(bundle))
	for _, c := range bundle {
		got = append(got, pki.CAHashOf(c).String())
	}
	return "", nil, fmt.Errorf("cluster-info at %s publishes CA %v, want %s: %w; nothing was sent to it",
		endpoint, got, pin, ErrCAHashMismatch)
}

// verifyPeer checks that the chain the server presented during the
// untrusted read verifies against the pinned CA: a machine in the middle
// that relays the real cluster-info is caught here.
func verifyPeer(peer []*x509.Certificate, ca *x509.Certificate, endpoint string) error {
	if len(peer) == 0 {
		return fmt.Errorf("%s presented no certificate: %w", endpoint, ErrImpostor)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := peer[0].Verify(opts); err != nil {
		return fmt.Errorf("%s presented a certificate for %q issued by %q: %w (%v); nothing was sent to it",
			endpoint, peer[0].Subject.CommonName, peer[0].Issuer.CommonName, ErrImpostor, err)
	}
	return nil
}

// fetchClusterInfo reads the ConfigMap and returns its kubeconfig and the
// signatures by token ID.
func fetchClusterInfo(ctx context.Context, hc *http.Client, endpoint string) (string, map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+clusterInfoURLPath, nil)
	if err != nil {
		return "", nil, err
	}
	req.Header.Set("Accept", contentJSON)
	resp, err := hc.Do(req)
	if err != nil {
		var cverr *tls.CertificateVerificationError
		if errors.As(err, &cverr) {
			return "", nil, fmt.Errorf("%s: %w (%v); nothing was sent to it", endpoint, ErrImpostor, cverr.Err)
		}
		return "", nil, discoveryError{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return "", nil, discoveryError{err}
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotFound:
		return "", nil, discoveryError{fmt.Errorf("%s has no kube-public/cluster-info yet (is `anvil init` finished there?)", endpoint)}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", nil, fmt.Errorf("%s refuses anonymous reads of kube-public/cluster-info (%d): the cluster must allow them for joins", endpoint, resp.StatusCode)
	default:
		return "", nil, discoveryError{fmt.Errorf("GET %s%s: %s", endpoint, clusterInfoURLPath, resp.Status)}
	}
	return decodeClusterInfo(endpoint, data)
}

// decodeClusterInfo reads the kubeconfig and the signatures by token ID
// out of the cluster-info ConfigMap a server sent.
func decodeClusterInfo(endpoint string, data []byte) (string, map[string]string, error) {
	var cm corev1.ConfigMap
	if err := json.Unmarshal(data, &cm); err != nil {
		return "", nil, fmt.Errorf("%s: cluster-info is not a ConfigMap: %w", endpoint, err)
	}
	content, ok := cm.Data[bootstrapapi.KubeConfigKey]
	if !ok {
		return "", nil, fmt.Errorf("%s: cluster-info has no %q key", endpoint, bootstrapapi.KubeConfigKey)
	}
	sigs := map[string]string{}
	for k, v := range cm.Data {
		if id, ok := strings.CutPrefix(k, bootstrapapi.JWSSignatureKeyPrefix); ok {
			sigs[id] = v
		}
	}
	return content, sigs, nil
}

// parseClusterInfo reads the server URL and the CA bundle from
// cluster-info's kubeconfig (one cluster, no users).
func parseClusterInfo(content string) (string, []*x509.Certificate, error) {
	kc, err := clientcmd.Load([]byte(content))
	if err != nil {
		return "", nil, fmt.Errorf("parse its kubeconfig: %w", err)
	}
	if len(kc.Clusters) != 1 {
		return "", nil, fmt.Errorf("its kubeconfig names %d clusters, want 1", len(kc.Clusters))
	}
	for _, cl := range kc.Clusters {
		certs, err := pki.ParseCerts(cl.CertificateAuthorityData)
		if err != nil {
			return "", nil, fmt.Errorf("its certificate-authority-data: %w", err)
		}
		return cl.Server, certs, nil
	}
	panic("unreachable")
}
