package pki

import (
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/api/v1alpha1"
)

// TestOpenSSLVerify checks the PKI with the real openssl binary: every leaf
// verifies against its own CA for its purpose, the etcd leaves verify only
// against the etcd CA, and no leaf verifies against a CA that did not sign
// it.
func TestOpenSSLVerify(t *testing.T) {
	openssl := requireOpenSSL(t)
	for _, alg := range []v1alpha1.KeyAlgorithm{v1alpha1.ECDSAP256, v1alpha1.RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			h := newTestHost(t)
			cfg := testConfig(t, "m1")
			cfg.KeyAlgorithm = alg
			h.ensure(t, cfg, h.opts())

			leaves := allLeafCertFiles()
			// The kubeconfigs' client certificates are leaves of ca too.
			for _, k := range Kubeconfigs() {
				f := filepath.Join(t.TempDir(), k.Name+".crt")
				extractClientCert(t, filepath.Join(h.kube, k.Name), f)
				leaves[f] = CertFile(CACertAndKeyBaseName)
			}
			for leaf, ca := range leaves {
				leafPath := leaf
				if !filepath.IsAbs(leaf) {
					leafPath = h.file(leaf)
				}
				c := readCert(t, leafPath)
				purpose := "sslclient"
				if c.ExtKeyUsage[0] == x509.ExtKeyUsageServerAuth {
					purpose = "sslserver"
				}
				for _, other := range CAs() {
					caPath := h.file(CertFile(other.BaseName))
					out, err := exec.Command(openssl, "verify", "-purpose", purpose, "-CAfile", caPath, leafPath).CombinedOutput()
					if CertFile(other.BaseName) == ca {
						if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), ": OK") {
							t.Errorf("openssl verify -CAfile %s %s: %v\n%s", other.Name, leaf, err, out)
						}
					} else if err == nil {
						t.Errorf("%s verifies against %s, which did not sign it:\n%s", leaf, other.Name, out)
					}
				}
			}
		})
	}
}

// TestOpenSSLEtcdLeavesOnlyEtcdCA spells out the rule the issue states:
// etcd's certificates are trusted by the etcd CA and by nothing else.
func TestOpenSSLEtcdLeavesOnlyEtcdCA(t *testing.T) {
	openssl := requireOpenSSL(t)
	h := newTestHost(t)
	h.ensure(t, testConfig(t, "m1"), Options{})
	for _, leaf := range []string{"etcd/server.crt", "etcd/peer.crt", "etcd/healthcheck-client.crt", "apiserver-etcd-client.crt"} {
		if out, err := exec.Command(openssl, "verify", "-CAfile", h.file("etcd/ca.crt"), h.file(leaf)).CombinedOutput(); err != nil {
			t.Errorf("%s against etcd/ca.crt: %v\n%s", leaf, err, out)
		}
		if out, err := exec.Command(openssl, "verify", "-CAfile", h.file("ca.crt"), h.file(leaf)).CombinedOutput(); err == nil {
			t.Errorf("%s verifies against ca.crt:\n%s", leaf, out)
		}
	}
}

// TestOpenSSLCAHash: CAHash is what kubeadm's documentation computes with
// openssl for --discovery-token-ca-cert-hash.
func TestOpenSSLCAHash(t *testing.T) {
	requireOpenSSL(t)
	for _, alg := range []v1alpha1.KeyAlgorithm{v1alpha1.ECDSAP256, v1alpha1.RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			h := newTestHost(t)
			cfg := testConfig(t, "m1")
			cfg.KeyAlgorithm = alg
			h.ensure(t, cfg, Options{})
			for _, ca := range CAs() {
				path := h.file(CertFile(ca.BaseName))
				out, err := exec.Command("sh", "-c",
					`openssl x509 -pubkey -noout -in "$1" | openssl pkey -pubin -outform der | sha256sum`, "sh", path).Output()
				if err != nil {
					t.Fatalf("openssl: %v", err)
				}
				want := "sha256:" + strings.Fields(string(out))[0]
				got, err := CAHashFromFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if got.String() != want {
					t.Errorf("%s: CAHash %s, openssl %s", ca.Name, got, want)
				}
				parsed, err := ParseCAHash(want)
				if err != nil || !parsed.Matches(readCert(t, path)) {
					t.Errorf("%s: ParseCAHash(%s) = %v, %v; does not match its CA", ca.Name, want, parsed, err)
				}
			}
		})
	}
}

func extractClientCert(t *testing.T, kubeconfig, to string) {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cr, why := credentials(kc)
	if why != "" {
		t.Fatalf("%s: %s", kubeconfig, why)
	}
	if err := os.WriteFile(to, cr.cert, 0o644); err != nil {
		t.Fatal(err)
	}
}
