package agent_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
)

// relayImpostor is an apiserver on loopback with a certificate from its
// own CA that relays the real control plane's cluster-info, signature and
// all — a machine in the middle. It records every request it gets.
type relayImpostor struct {
	URL  string
	mu   sync.Mutex
	reqs []seen
}

type seen struct {
	Method, Path, Authorization string
	ClientCert                  bool
}

func newRelayImpostor(t *testing.T, cp *mastertest.ControlPlane) *relayImpostor {
	t.Helper()
	key, err := pki.NewKey("")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	relay := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	imp := &relayImpostor{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		imp.mu.Lock()
		imp.reqs = append(imp.reqs, seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.TLS != nil && len(r.TLS.PeerCertificates) > 0})
		imp.mu.Unlock()
		resp, err := relay.Get(cp.URL + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	imp.URL = srv.URL
	return imp
}

func (i *relayImpostor) requests() []seen {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]seen(nil), i.reqs...)
}

func mustParseToken(t *testing.T, s string) pki.Token {
	t.Helper()
	tok, err := pki.ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
