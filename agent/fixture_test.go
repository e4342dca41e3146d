package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"anvil.dev/anvil/pki"
)

// testCA is a CA made for one test.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := pki.NewKey("")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pem() []byte { return pki.EncodeCert(ca.cert) }

// serving is a loopback server certificate signed by ca.
func (ca *testCA) serving(t testing.TB) tls.Certificate {
	t.Helper()
	key, _ := pki.NewKey("")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// sign issues what a CSR asks for, as the controller-manager's signer.
func (ca *testCA) sign(t testing.TB, csrPEM []byte, validity time.Duration) []byte {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(validity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// clusterInfo is the kube-public/cluster-info ConfigMap publishing caPEM,
// signed for each token.
func clusterInfo(t testing.TB, server string, caPEM []byte, sign map[string]string) *corev1.ConfigMap {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters[""] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	content, err := clientcmd.Write(*kc)
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]string{bootstrapapi.KubeConfigKey: string(content)}
	for id, secret := range sign {
		sig, err := jws.ComputeDetachedSignature(string(content), id, secret)
		if err != nil {
			t.Fatal(err)
		}
		data[bootstrapapi.JWSSignatureKeyPrefix+id] = sig
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: "kube-public"},
		Data:       data,
	}
}

// request is one request a fake apiserver saw.
type request struct {
	Method, Path  string
	Authorization string
	ClientCert    bool
	Body          []byte
}

// fakeAPIServer is a TLS server on loopback that records every request
// and answers cluster-info and the CSR API the way the controller-manager
// would: created CSRs are approved and signed by signer, or denied.
type fakeAPIServer struct {
	t      testing.TB
	srv    *httptest.Server
	ca     *testCA // what the server certificate is issued by
	signer *testCA

	mu       sync.Mutex
	reqs     []request
	info     *corev1.ConfigMap
	csrs     map[string]*certificatesv1.CertificateSigningRequest
	deny     bool
	token    string // accepted bearer token; "" accepts none
	extra    func(w http.ResponseWriter, r *http.Request) bool
	validity time.Duration
}

func newFakeAPIServer(t testing.TB, ca, signer *testCA) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{t: t, ca: ca, signer: signer, csrs: map[string]*certificatesv1.CertificateSigningRequest{}, validity: time.Hour}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serving(t)}, ClientAuth: tls.RequestClientCert}
	f.srv.EnableHTTP2 = true
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPIServer) URL() string { return f.srv.URL }

func (f *fakeAPIServer) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func (f *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, body))
	f.mu.Lock()
	f.reqs = append(f.reqs, request{Method: r.Method, Path: r.URL.Path, Authorization: r.Header.Get("Authorization"), ClientCert: r.TLS != nil && len(r.TLS.PeerCertificates) > 0, Body: body})
	extra, info, token := f.extra, f.info, f.token
	f.mu.Unlock()
	if extra != nil && extra(w, r) {
		return
	}
	switch {
	case r.Method == "GET" && r.URL.Path == clusterInfoURLPath:
		if info == nil {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "configmaps \"cluster-info\" not found")
			return
		}
		json.NewEncoder(w).Encode(info)
	case strings.HasPrefix(r.URL.Path, csrPath):
		authed := r.TLS != nil && len(r.TLS.PeerCertificates) > 0
		if token != "" && r.Header.Get("Authorization") == "Bearer "+token {
			authed = true
		}
		if !authed {
			writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
			return
		}
		f.serveCSR(w, r, body)
	default:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not found")
	}
}

func (f *fakeAPIServer) serveCSR(w http.ResponseWriter, r *http.Request, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case "POST":
		var csr certificatesv1.CertificateSigningRequest
		if err := json.Unmarshal(body, &csr); err != nil {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		if _, ok := f.csrs[csr.Name]; ok {
			writeStatus(w, http.StatusConflict, metav1.StatusReasonAlreadyExists, "exists")
			return
		}
		if f.deny {
			csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "Policy", Message: "no"}}
		} else {
			csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}
			csr.Status.Certificate = f.signer.sign(f.t, csr.Spec.Request, f.validity)
		}
		f.csrs[csr.Name] = &csr
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(&csr)
	case "GET":
		name := strings.TrimPrefix(r.URL.Path, csrPath+"/")
		csr, ok := f.csrs[name]
		if !ok {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not found")
			return
		}
		json.NewEncoder(w).Encode(csr)
	}
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Code: int32(code), Reason: reason, Message: msg})
}

func mustToken(t testing.TB, s string) pki.Token {
	t.Helper()
	tok, err := pki.ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
