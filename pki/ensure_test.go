package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
)

func TestEnsureCreatesKubeadmLayout(t *testing.T) {
	h := newTestHost(t)
	res := h.ensure(t, testConfig(t, "m1"), h.opts())

	var names []string
	for _, r := range res {
		if r.Action != Created {
			t.Errorf("%s: action %s, want created", r.Name, r.Action)
		}
		names = append(names, r.Name)
	}
	want := []string{"ca", "etcd-ca", "front-proxy-ca", "apiserver", "apiserver-kubelet-client",
		"front-proxy-client", "etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client",
		"sa", "backup-signing", "admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "anvil-vip.conf", "anvil-approver.conf"}
	if !slices.Equal(names, want) {
		t.Errorf("results %v\nwant %v", names, want)
	}

	modes := map[string]os.FileMode{
		"etc":                     0o700,
		"etc/kubernetes":          0o700,
		"etc/kubernetes/pki":      0o700,
		"etc/kubernetes/pki/etcd": 0o700,
		// CIS 1.1.20: certificates 0600 like the keys, sa.pub too.
		"etc/kubernetes/pki/sa.key": 0o600, "etc/kubernetes/pki/sa.pub": 0o600,
		"etc/kubernetes/pki/backup-signing.key": 0o600, "etc/kubernetes/pki/backup-signing.pub": 0o600,
		"etc/kubernetes/pki/" + ClusterSigningCertFile: 0o600,
	}
	for _, f := range SharedFiles() {
		if strings.HasSuffix(f, ".crt") || strings.HasSuffix(f, ".key") {
			modes["etc/kubernetes/pki/"+f] = 0o600
		}
	}
	for _, s := range Certificates() {
		modes["etc/kubernetes/pki/"+CertFile(s.BaseName)] = 0o600
		modes["etc/kubernetes/pki/"+KeyFile(s.BaseName)] = 0o600
	}
	for _, k := range Kubeconfigs() {
		modes["etc/kubernetes/"+k.Name] = 0o600
	}
	snap := snapshot(t, h.root)
	for rel, mode := range modes {
		e, ok := snap[filepath.Join(h.root, rel)]
		if !ok {
			t.Errorf("%s was not written", rel)
			continue
		}
		if e.mode.Perm() != mode {
			t.Errorf("%s: mode %#o, want %#o", rel, e.mode.Perm(), mode)
		}
	}
	if len(snap) != len(modes)+1 { // +1: the root itself
		t.Errorf("wrote %d entries, want %d (no temp files left behind)", len(snap)-1, len(modes))
	}
}

func TestEnsureLeafSubjectsAndSANs(t *testing.T) {
	h := newTestHost(t)
	h.ensure(t, testConfig(t, "m1"), h.opts())

	tests := []struct {
		file   string
		cn     string
		orgs   []string
		usages []x509.ExtKeyUsage
		dns    []string
		ips    []string
	}{
		{"apiserver.crt", "kube-apiserver", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			[]string{"m1", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "k8s.example.com", "api.example.com"},
			[]string{"192.168.1.11", "10.0.0.11", "10.0.0.10", "10.96.0.1", "127.0.0.1", "203.0.113.7"}},
		{"apiserver-kubelet-client.crt", "kube-apiserver-kubelet-client", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil},
		{"apiserver-etcd-client.crt", "kube-apiserver-etcd-client", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil},
		{"front-proxy-client.crt", "front-proxy-client", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil},
		{"etcd/server.crt", "m1", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			[]string{"m1", "localhost"}, []string{"192.168.1.11", "10.0.0.11", "127.0.0.1", "::1"}},
		{"etcd/peer.crt", "m1", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			[]string{"m1", "localhost"}, []string{"192.168.1.11", "10.0.0.11", "127.0.0.1", "::1"}},
		{"etcd/healthcheck-client.crt", "kube-etcd-healthcheck-client", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c := readCert(t, h.file(tt.file))
			if c.Subject.CommonName != tt.cn || !slices.Equal(c.Subject.Organization, tt.orgs) {
				t.Errorf("subject %v, want CN=%s O=%v", c.Subject, tt.cn, tt.orgs)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.usages) {
				t.Errorf("usages %v, want %v", c.ExtKeyUsage, tt.usages)
			}
			if !slices.Equal(c.DNSNames, tt.dns) {
				t.Errorf("DNS SANs %v\nwant %v", c.DNSNames, tt.dns)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ipString(ip))
			}
			if !slices.Equal(ips, tt.ips) {
				t.Errorf("IP SANs %v\nwant %v", ips, tt.ips)
			}
			if c.IsCA {
				t.Error("leaf is a CA")
			}
			if got := c.NotAfter.Sub(c.NotBefore); got != 365*24*time.Hour+backdate {
				t.Errorf("validity %v, want 365d plus the %v backdate", got, backdate)
			}
		})
	}
	for _, ca := range CAs() {
		c := readCert(t, h.file(CertFile(ca.BaseName)))
		if !c.IsCA || c.Subject.CommonName != ca.CommonName {
			t.Errorf("%s: IsCA=%v CN=%q, want a CA with CN %q", ca.Name, c.IsCA, c.Subject.CommonName, ca.CommonName)
		}
		if got := c.NotAfter.Sub(c.NotBefore); got != 3650*24*time.Hour+backdate {
			t.Errorf("%s: validity %v, want 3650d plus backdate", ca.Name, got)
		}
	}
}

func TestEnsureTwiceChangesNothing(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	before := snapshot(t, h.root)
	// A coarse filesystem clock must not hide a rewrite.
	time.Sleep(20 * time.Millisecond)
	res := h.ensure(t, cfg, h.opts())
	for _, r := range res {
		if r.Action != Kept || r.Reason != "" {
			t.Errorf("%s: %s (%s), want kept", r.Name, r.Action, r.Reason)
		}
	}
	requireUnchanged(t, before, snapshot(t, h.root))

	if _, err := CheckExpiration(h.pki, h.opts()); err != nil {
		t.Fatal(err)
	}
	requireUnchanged(t, before, snapshot(t, h.root))
}

func TestEnsureNewSANReissuesOnlyAPIServer(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	before := snapshot(t, h.root)
	oldKey, _ := os.ReadFile(h.file("apiserver.key"))

	cfg.CertSANs = append(cfg.CertSANs, "new.example.com", "198.51.100.9")
	res := h.ensure(t, cfg, h.opts())
	for _, r := range res {
		want := Kept
		if r.Name == "apiserver" {
			want = Reissued
			if r.Reason != "SANs changed: +DNS:new.example.com +IP:198.51.100.9" {
				t.Errorf("reason %q", r.Reason)
			}
		}
		if r.Action != want {
			t.Errorf("%s: %s, want %s", r.Name, r.Action, want)
		}
	}
	// The directory's mtime moves with the rename; only files count here.
	got := slices.DeleteFunc(changed(before, snapshot(t, h.root)), func(p string) bool { return p == h.pki })
	want := []string{h.file("apiserver.crt"), h.file("apiserver.key")}
	if !slices.Equal(got, want) {
		t.Errorf("changed %v, want %v", got, want)
	}
	c := readCert(t, h.file("apiserver.crt"))
	if !slices.Contains(c.DNSNames, "new.example.com") {
		t.Errorf("new SAN missing: %v", c.DNSNames)
	}
	if err := c.CheckSignatureFrom(readCert(t, h.file("ca.crt"))); err != nil {
		t.Errorf("re-issued leaf is not signed by the same CA: %v", err)
	}
	if newKey, _ := os.ReadFile(h.file("apiserver.key")); string(newKey) == string(oldKey) {
		t.Error("re-issued leaf kept its key")
	}

	// Dropping the SANs again re-issues it once more, the other way.
	cfg.CertSANs = cfg.CertSANs[:2]
	res = h.ensure(t, cfg, h.opts())
	if r := res[3]; r.Name != "apiserver" || r.Reason != "SANs changed: -DNS:new.example.com -IP:198.51.100.9" {
		t.Errorf("got %+v", r)
	}
}

// TestEnsureReissuesStaleLeaves: each way a leaf can go stale re-issues
// that leaf alone, from the same CA, and says why.
func TestEnsureReissuesStaleLeaves(t *testing.T) {
	tests := []struct {
		name   string
		leaf   string
		break_ func(t *testing.T, h testHost)
		reason string
	}{
		{"key of another leaf", "apiserver", func(t *testing.T, h testHost) {
			copyFile(t, h.file("front-proxy-client.key"), h.file("apiserver.key"))
		}, "apiserver.key does not match the certificate"},
		{"missing key", "etcd-peer", func(t *testing.T, h testHost) {
			os.Remove(h.file("etcd/peer.key"))
		}, "peer.key was missing"},
		{"missing cert", "etcd-server", func(t *testing.T, h testHost) {
			os.Remove(h.file("etcd/server.crt"))
		}, "server.crt was missing"},
		{"expired", "front-proxy-client", func(t *testing.T, h testHost) {
			writeLeaf(t, h, "front-proxy-client", FrontProxyCACertAndKeyBaseName, leafTemplate{
				CommonName: "front-proxy-client", Usages: clientUsage()}, time.Now().Add(-48*time.Hour), time.Hour)
		}, "expired on"},
		{"old kubeadm subject", "apiserver-kubelet-client", func(t *testing.T, h testHost) {
			writeLeaf(t, h, "apiserver-kubelet-client", CACertAndKeyBaseName, leafTemplate{
				CommonName: "kube-apiserver-kubelet-client", Organizations: []string{"system:masters"}, Usages: clientUsage()}, time.Now(), time.Hour)
		}, "subject is CN=kube-apiserver-kubelet-client,O=system:masters, want CN=kube-apiserver-kubelet-client"},
		{"wrong usage", "etcd-healthcheck-client", func(t *testing.T, h testHost) {
			writeLeaf(t, h, "etcd/healthcheck-client", EtcdCACertAndKeyBaseName, leafTemplate{
				CommonName: "kube-etcd-healthcheck-client", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, time.Now(), time.Hour)
		}, "usages are [server], want [client]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHost(t)
			cfg := testConfig(t, "m1")
			h.ensure(t, cfg, h.opts())
			tt.break_(t, h)
			res := h.ensure(t, cfg, h.opts())
			for _, r := range res {
				if r.Name == tt.leaf {
					if r.Action != Reissued || !strings.Contains(r.Reason, tt.reason) {
						t.Errorf("%s: %s (%s), want reissued (%s)", r.Name, r.Action, r.Reason, tt.reason)
					}
				} else if r.Action != Kept {
					t.Errorf("%s: %s (%s), want kept", r.Name, r.Action, r.Reason)
				}
			}
			again := h.ensure(t, cfg, h.opts())
			for _, r := range again {
				if r.Action != Kept {
					t.Errorf("third run: %s %s", r.Name, r.Action)
				}
			}
		})
	}
}

// writeLeaf replaces a leaf with one signed by the right CA but made to the
// test's liking.
func writeLeaf(t *testing.T, h testHost, base, caBase string, tmpl leafTemplate, now time.Time, validity time.Duration) {
	t.Helper()
	caCert := readCert(t, h.file(CertFile(caBase)))
	caKey, err := ReadKeyFile(h.file(KeyFile(caBase)))
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := issue(caCert, caKey, tmpl, v1alpha1.ECDSAP256, validity, now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := EncodeKey(key)
	if err := os.WriteFile(h.file(KeyFile(base)), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.file(CertFile(base)), EncodeCert(cert), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureRSA(t *testing.T) {
	algs := []v1alpha1.KeyAlgorithm{v1alpha1.RSA2048, v1alpha1.RSA3072, v1alpha1.RSA4096}
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			if alg == v1alpha1.RSA4096 && testing.Short() {
				t.Skip("RSA-4096 key generation is slow")
			}
			t.Parallel()
			h := newTestHost(t)
			cfg := testConfig(t, "m1")
			cfg.KeyAlgorithm = alg
			h.ensure(t, cfg, h.opts())
			bits, _ := algorithmBits(alg)
			for _, f := range append(slices.Collect(mapKeys(allLeafCertFiles())), "ca.crt", "etcd/ca.crt") {
				c := readCert(t, h.file(f))
				k, ok := c.PublicKey.(*rsa.PublicKey)
				if !ok || k.N.BitLen() != bits {
					t.Errorf("%s: key %T, want RSA-%d", f, c.PublicKey, bits)
				}
				if c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
					t.Errorf("%s: RSA key without keyEncipherment", f)
				}
			}
			sa, err := ReadKeyFile(h.file(ServiceAccountKeyName))
			if err != nil {
				t.Fatal(err)
			}
			if k, ok := sa.(*rsa.PrivateKey); !ok || k.N.BitLen() != bits {
				t.Errorf("sa.key: %T, want RSA-%d", sa, bits)
			}
			before := snapshot(t, h.root)
			h.ensure(t, cfg, h.opts())
			requireUnchanged(t, before, snapshot(t, h.root))
		})
	}
}

// TestEnsureAlgorithmChange: leaves follow the cluster file's algorithm;
// the CAs and the service-account key, which others trust, stay.
func TestEnsureAlgorithmChange(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, Options{})
	cfg.KeyAlgorithm = v1alpha1.RSA2048
	for _, r := range h.ensure(t, cfg, Options{}) {
		want := Reissued
		if sharedName(r.Name) {
			want = Kept
		}
		if r.Action != want {
			t.Errorf("%s: %s, want %s", r.Name, r.Action, want)
		}
		if want == Reissued && r.Reason != "key is ECDSA-P256, want RSA-2048" {
			t.Errorf("%s: reason %q", r.Name, r.Reason)
		}
	}
	if _, ok := readCert(t, h.file("ca.crt")).PublicKey.(*ecdsa.PublicKey); !ok {
		t.Error("CA key type changed")
	}
	// The backup signing key is ed25519 whatever the cluster's algorithm.
	b, err := os.ReadFile(h.file(BackupSigningKeyName))
	if err != nil {
		t.Fatal(err)
	}
	if k, err := ParseKey(b); err != nil {
		t.Fatal(err)
	} else if _, ok := k.(ed25519.PrivateKey); !ok {
		t.Errorf("backup signing key is a %T, want ed25519", k)
	}
	if pub, err := ReadBackupSigningPublicKey(filepath.Dir(h.file(BackupSigningKeyName))); err != nil || len(pub) != ed25519.PublicKeySize {
		t.Errorf("backup-signing.pub: %v %v", pub, err)
	}
}

// TestEnsureJoiningMaster is the HA join path: a master that received only
// the shared files issues its own leaves from the shared CAs.
func TestEnsureJoiningMaster(t *testing.T) {
	first, second := newTestHost(t), newTestHost(t)
	first.ensure(t, testConfig(t, "m1"), first.opts())
	for _, f := range SharedFiles() {
		if err := os.MkdirAll(filepath.Dir(second.file(f)), 0o700); err != nil {
			t.Fatal(err)
		}
		copyFile(t, first.file(f), second.file(f))
	}
	res := second.ensure(t, testConfig(t, "m2"), second.opts())
	for _, r := range res {
		want := Created
		if sharedName(r.Name) {
			want = Kept
		}
		if r.Action != want {
			t.Errorf("%s: %s, want %s", r.Name, r.Action, want)
		}
	}
	peer := readCert(t, second.file("etcd/peer.crt"))
	if peer.Subject.CommonName != "m2" || !slices.ContainsFunc(peer.IPAddresses, func(ip net.IP) bool { return ip.String() == "10.0.0.12" }) {
		t.Errorf("m2's peer cert: CN %s, IPs %v", peer.Subject.CommonName, peer.IPAddresses)
	}
	if err := peer.CheckSignatureFrom(readCert(t, first.file("etcd/ca.crt"))); err != nil {
		t.Errorf("m2's peer cert is not signed by the shared etcd CA: %v", err)
	}
	h1, _ := CAHashFromFile(first.file("ca.crt"))
	h2, _ := CAHashFromFile(second.file("ca.crt"))
	if h1 != h2 {
		t.Error("CA hash differs between masters")
	}
}

func TestEnsureForeignCA(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	other := newTestHost(t)
	other.ensure(t, cfg, other.opts())
	// This directory now holds our CA but another cluster's apiserver cert.
	copyFile(t, other.file("apiserver.crt"), h.file("apiserver.crt"))
	copyFile(t, other.file("apiserver.key"), h.file("apiserver.key"))
	before := snapshot(t, h.root)

	_, err := Ensure(h.pki, cfg, h.opts())
	if !errors.Is(err, ErrNeedsForce) || !strings.Contains(err.Error(), h.file("apiserver.crt")) {
		t.Fatalf("err = %v, want a refusal naming apiserver.crt", err)
	}
	requireUnchanged(t, before, snapshot(t, h.root))

	opts := h.opts()
	opts.Force = true
	res := h.ensure(t, cfg, opts)
	if a := actions(res); a["apiserver"] != Reissued || a["ca"] != Kept {
		t.Errorf("forced: %v", a)
	}
	if err := readCert(t, h.file("apiserver.crt")).CheckSignatureFrom(readCert(t, h.file("ca.crt"))); err != nil {
		t.Error(err)
	}
}

// TestEnsureLostCA: leaves whose CA is gone belong to a CA that no longer
// exists here; making a new CA silently would orphan them.
func TestEnsureLostCA(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, Options{})
	os.Remove(h.file("etcd/ca.crt"))
	os.Remove(h.file("etcd/ca.key"))
	before := snapshot(t, h.root)
	_, err := Ensure(h.pki, cfg, Options{})
	if !errors.Is(err, ErrNeedsForce) || !strings.Contains(err.Error(), h.file("etcd/server.crt")) {
		t.Fatalf("err = %v", err)
	}
	requireUnchanged(t, before, snapshot(t, h.root))

	res := h.ensure(t, cfg, Options{Force: true})
	a := actions(res)
	for _, n := range []string{"etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client"} {
		if a[n] != Reissued {
			t.Errorf("%s: %s", n, a[n])
		}
	}
	if a["etcd-ca"] != Created || a["apiserver"] != Kept {
		t.Errorf("%v", a)
	}
}

func TestEnsureCAKeyMismatchForced(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, Options{})
	copyFile(t, h.file("front-proxy-client.key"), h.file("front-proxy-ca.key"))
	res := h.ensure(t, cfg, Options{Force: true})
	a := actions(res)
	if a["front-proxy-ca"] != Replaced || a["front-proxy-client"] != Reissued || a["ca"] != Kept || a["apiserver"] != Kept {
		t.Errorf("%v", a)
	}
}

func TestEnsureExternallyManagedCA(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	os.Remove(h.file("front-proxy-ca.key"))
	res := h.ensure(t, cfg, h.opts())
	for _, r := range res {
		if r.Action != Kept {
			t.Errorf("%s: %s", r.Name, r.Action)
		}
		if r.Name == FrontProxyCAName && r.Reason != "externally managed: no front-proxy-ca.key" {
			t.Errorf("reason %q", r.Reason)
		}
	}
	exp, err := CheckExpiration(h.pki, h.opts())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range append(exp.Certificates, exp.CertificateAuthorities...) {
		want := e.Name == FrontProxyCAName || e.CA == FrontProxyCAName
		if e.ExternallyManaged != want {
			t.Errorf("%s: externally managed %v, want %v", e.Name, e.ExternallyManaged, want)
		}
	}

	os.Remove(h.file("front-proxy-client.crt"))
	before := snapshot(t, h.root)
	_, err = Ensure(h.pki, cfg, h.opts())
	if err == nil || !strings.Contains(err.Error(), "externally managed") || !strings.Contains(err.Error(), h.file("front-proxy-client.crt")) {
		t.Fatalf("err = %v", err)
	}
	requireUnchanged(t, before, snapshot(t, h.root))
}

func TestEnsureTightensKeyModes(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	for _, f := range []string{h.file("ca.key"), h.file("etcd/server.key"), h.file("sa.key"), filepath.Join(h.kube, "admin.conf")} {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshot(t, h.root)
	res := h.ensure(t, cfg, h.opts())
	n := 0
	for _, r := range res {
		if r.Action != Kept {
			t.Errorf("%s: %s", r.Name, r.Action)
		}
		if strings.Contains(r.Reason, "tightened from 0644 to 0600") {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d results say a mode was tightened, want 4: %+v", n, res)
	}
	after := snapshot(t, h.root)
	for p, b := range before {
		a := after[p]
		if string(a.data) != string(b.data) || !a.mtime.Equal(b.mtime) {
			t.Errorf("%s: content or mtime changed", p)
		}
		if a.mode.IsRegular() && a.mode.Perm() == 0o644 && strings.HasSuffix(p, ".key") {
			t.Errorf("%s still 0644", p)
		}
	}
}

// TestEnsureTightensCertificateModes: certificates an older anvil wrote
// 0644 are kept, and made 0600 (CIS 1.1.20) without being rewritten.
func TestEnsureTightensCertificateModes(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	pki := filepath.Join(h.root, "etc", "kubernetes", "pki")
	var certs []string
	filepath.WalkDir(pki, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(p, ".crt") || strings.HasSuffix(p, ".pub")) {
			certs = append(certs, p)
		}
		return err
	})
	if len(certs) != len(CAs())+len(Certificates())+len(KeyPairs())+1 { // +1: the signing certificate alone
		t.Fatalf("found %d certificates and public keys: %v", len(certs), certs)
	}
	for _, f := range certs {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshot(t, h.root)
	for _, r := range h.ensure(t, cfg, h.opts()) {
		if r.Action != Kept {
			t.Errorf("%s: %s", r.Name, r.Action)
		}
	}
	after := snapshot(t, h.root)
	for _, f := range certs {
		if a, b := after[f], before[f]; string(a.data) != string(b.data) || !a.mtime.Equal(b.mtime) {
			t.Errorf("%s: content or mtime changed", f)
		}
		if m := after[f].mode.Perm(); m != 0o600 {
			t.Errorf("%s: mode %#o, want 0600", f, m)
		}
	}
}

func TestEnsureServiceAccountPub(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, Options{})
	oldPub, _ := os.ReadFile(h.file("sa.pub"))
	os.Remove(h.file("sa.pub"))
	res := h.ensure(t, cfg, Options{})
	if r := res[10]; r.Name != "sa" || r.Action != Created || r.Path != h.file("sa.pub") {
		t.Errorf("%+v", r)
	}
	if newPub, _ := os.ReadFile(h.file("sa.pub")); string(newPub) != string(oldPub) {
		t.Error("sa.pub re-derived differently")
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// sharedName says a result is of what every master shares (a CA or a bare
// key pair): kept when a master joins or the key algorithm changes.
func sharedName(name string) bool {
	for _, ca := range CAs() {
		if ca.Name == name {
			return true
		}
	}
	return slices.ContainsFunc(KeyPairs(), func(kp KeyPairSpec) bool { return kp.Name == name })
}
