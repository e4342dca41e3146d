package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// certsIn parses a PEM file's certificates.
func certsIn(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCerts(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return certs
}

// verifies says whether leaf chains to one of the roots.
func verifies(leaf *x509.Certificate, roots []*x509.Certificate) bool {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// kubeconfigCerts are a kubeconfig's trusted CAs and client certificate.
func kubeconfigCerts(t *testing.T, path string) (trust []*x509.Certificate, client *x509.Certificate) {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cr, why := credentials(kc)
	if why != "" {
		t.Fatalf("%s: %s", path, why)
	}
	if trust, err = ParseCerts(cr.caPEM); err != nil {
		t.Fatal(err)
	}
	cc, err := ParseCerts(cr.cert)
	if err != nil {
		t.Fatal(err)
	}
	return trust, cc[0]
}

func TestRotateCA(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	caPath := h.file("ca.crt")
	old := certsIn(t, caPath)[0]
	oldLeaf := certsIn(t, h.file("apiserver.crt"))[0]
	if got := certsIn(t, h.file(ClusterSigningCertFile)); len(got) != 1 || !got[0].Equal(old) {
		t.Fatalf("%s is not the cluster CA alone", ClusterSigningCertFile)
	}

	// Out of order: nothing to trust, nothing to drop.
	if _, err := TrustNext(h.pki, h.kube); err == nil || !strings.Contains(err.Error(), "no next CAs") {
		t.Fatalf("TrustNext before the next CAs exist: %v", err)
	}
	if st, err := ReadRotation(h.pki); err != nil || st != (RotationState{}) {
		t.Fatalf("ReadRotation of a fresh PKI: %+v %v", st, err)
	}

	// Stage 1: trust.
	if err := PrepareRotation(h.pki, cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	next := certsIn(t, h.file("ca-next.crt"))[0]
	if err := PrepareRotation(h.pki, cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	if again := certsIn(t, h.file("ca-next.crt"))[0]; !again.Equal(next) {
		t.Fatal("PrepareRotation run again made another next CA")
	}
	if _, err := SwitchToNext(h.pki, cfg, h.opts()); err == nil {
		t.Fatal("SwitchToNext before the next CAs are trusted succeeded")
	}
	changed, err := TrustNext(h.pki, h.kube)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{caPath, h.file("etcd/ca.crt"), h.file("front-proxy-ca.crt"), filepath.Join(h.kube, "admin.conf")} {
		if !slices.Contains(changed, want) {
			t.Errorf("TrustNext changed %v, without %s", changed, want)
		}
	}
	bundle := certsIn(t, caPath)
	if len(bundle) != 2 || !bundle[0].Equal(old) || !bundle[1].Equal(next) {
		t.Fatalf("after trust, ca.crt holds %d certificates, want the old then the next", len(bundle))
	}
	trust, _ := kubeconfigCerts(t, filepath.Join(h.kube, "admin.conf"))
	if len(trust) != 2 {
		t.Errorf("admin.conf trusts %d CAs, want 2", len(trust))
	}
	if st, _ := ReadRotation(h.pki); st.Done != RotateTrust {
		t.Errorf("after trust: %+v", st)
	}
	if again, err := TrustNext(h.pki, h.kube); err != nil || len(again) != 0 {
		t.Errorf("TrustNext again changed %v (%v)", again, err)
	}
	if _, err := DropPrevious(h.pki, h.kube); err == nil {
		t.Error("DropPrevious before the switch succeeded")
	}
	// Ensure and a renewal keep working mid-rotation, still signing with
	// the old CA.
	h.ensure(t, cfg, h.opts())
	if _, err := Renew(h.pki, cfg, []string{"apiserver"}, h.opts()); err != nil {
		t.Fatal(err)
	}
	if leaf := certsIn(t, h.file("apiserver.crt"))[0]; leaf.CheckSignatureFrom(old) != nil {
		t.Error("a renewal during the trust stage was not signed by the old CA")
	}

	// Stage 2: reissue.
	changed, err = SwitchToNext(h.pki, cfg, h.opts())
	if err != nil {
		t.Fatal(err)
	}
	bundle = certsIn(t, caPath)
	if len(bundle) != 2 || !bundle[0].Equal(next) || !bundle[1].Equal(old) {
		t.Fatal("after reissue, ca.crt is not the new CA then the old")
	}
	key, err := ReadKeyFile(h.file("ca.key"))
	if err != nil || !keyMatches(next.PublicKey, key) {
		t.Fatalf("ca.key is not the new CA's key (%v)", err)
	}
	if got := certsIn(t, h.file(ClusterSigningCertFile)); len(got) != 1 || !got[0].Equal(next) {
		t.Error("the signing certificate file is not the new CA alone")
	}
	for _, f := range NextCAFiles() {
		if _, err := os.Stat(h.file(f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
	for _, s := range Certificates() {
		leaf := certsIn(t, h.file(CertFile(s.BaseName)))[0]
		ca := certsIn(t, h.file(CertFile(caBase(s.CA))))
		if leaf.CheckSignatureFrom(ca[0]) != nil {
			t.Errorf("%s is not signed by the new %s", s.Name, s.CA)
		}
	}
	for _, s := range Kubeconfigs() {
		p := filepath.Join(h.kube, s.Name)
		trust, client := kubeconfigCerts(t, p)
		if client.CheckSignatureFrom(next) != nil || len(trust) != 2 {
			t.Errorf("%s: client certificate not from the new CA, or trusts %d CAs", s.Name, len(trust))
		}
		if !slices.Contains(changed, p) {
			t.Errorf("SwitchToNext did not report %s", p)
		}
	}
	// Old leaves still verify against the bundle, new ones too.
	if !verifies(oldLeaf, bundle) {
		t.Error("a leaf of the old CA no longer verifies against the bundle")
	}
	if again, err := SwitchToNext(h.pki, cfg, h.opts()); err != nil || len(again) != 0 {
		t.Errorf("SwitchToNext again changed %v (%v)", again, err)
	}
	h.ensure(t, cfg, h.opts())

	// Stage 3: drop.
	if _, err := DropPrevious(h.pki, h.kube); err != nil {
		t.Fatal(err)
	}
	bundle = certsIn(t, caPath)
	if len(bundle) != 1 || !bundle[0].Equal(next) {
		t.Fatal("after drop, ca.crt is not the new CA alone")
	}
	if verifies(oldLeaf, bundle) {
		t.Error("a leaf of the old CA still verifies")
	}
	trust, _ = kubeconfigCerts(t, filepath.Join(h.kube, "admin.conf"))
	if len(trust) != 1 || !trust[0].Equal(next) {
		t.Error("admin.conf does not trust the new CA alone")
	}
	if st, _ := ReadRotation(h.pki); st != (RotationState{}) {
		t.Errorf("after drop: %+v", st)
	}
	if again, err := DropPrevious(h.pki, h.kube); err != nil || len(again) != 0 {
		t.Errorf("DropPrevious again changed %v (%v)", again, err)
	}
	// A re-run of Ensure afterwards keeps everything.
	for _, r := range h.ensure(t, cfg, h.opts()) {
		if r.Action != Kept {
			t.Errorf("Ensure after the rotation: %s %s (%s)", r.Name, r.Action, r.Reason)
		}
	}
}

func TestRotateCARefusesExternalCA(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	if err := os.Remove(h.file("front-proxy-ca.key")); err != nil {
		t.Fatal(err)
	}
	err := PrepareRotation(h.pki, cfg, time.Now())
	if err == nil || !strings.Contains(err.Error(), "front-proxy-ca.key") {
		t.Fatalf("PrepareRotation without a CA key: %v", err)
	}
	for _, f := range NextCAFiles() {
		if _, err := os.Stat(h.file(f)); !os.IsNotExist(err) {
			t.Errorf("%s written although the rotation was refused", f)
		}
	}
}

func caBase(name string) string {
	for _, c := range CAs() {
		if c.Name == name {
			return c.BaseName
		}
	}
	return ""
}

// TestRotateCAResumes: each step interrupted half-way is finished by
// running it again.
func TestRotateCAResumes(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())

	// A preparation that wrote one CA's successor but not the others.
	if err := PrepareRotation(h.pki, cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	os.Remove(h.file("front-proxy-ca-next.crt"))
	os.Remove(h.file("etcd/ca-next.crt"))
	os.Remove(h.file("etcd/ca-next.key"))
	if err := PrepareRotation(h.pki, cfg, time.Now()); err != nil {
		t.Fatalf("PrepareRotation after a partial one: %v", err)
	}
	if st, err := ReadRotation(h.pki); err != nil || !st.Prepared {
		t.Fatalf("after a repaired preparation: %+v %v", st, err)
	}
	if _, err := TrustNext(h.pki, h.kube); err != nil {
		t.Fatal(err)
	}

	// A switch that finished the etcd CA and stopped.
	etcd := certsIn(t, h.file("etcd/ca.crt"))
	nextKey, err := os.ReadFile(h.file("etcd/ca-next.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeBundle(h.file("etcd/ca.crt"), []*x509.Certificate{etcd[1], etcd[0]}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.file("etcd/ca.key"), nextKey, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(h.file("etcd/ca-next.key")) // the certificate is left behind
	if st, err := ReadRotation(h.pki); err != nil || st.Done != RotateTrust {
		t.Fatalf("after a half-done switch: %+v %v", st, err)
	}
	if _, err := SwitchToNext(h.pki, cfg, h.opts()); err != nil {
		t.Fatalf("SwitchToNext after a half-done one: %v", err)
	}
	for _, f := range NextCAFiles() {
		if _, err := os.Stat(h.file(f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
	for _, ca := range CAs() {
		b := certsIn(t, h.file(CertFile(ca.BaseName)))
		key, err := ReadKeyFile(h.file(KeyFile(ca.BaseName)))
		if err != nil || len(b) != 2 || !keyMatches(b[0].PublicKey, key) {
			t.Errorf("%s: %d certificates, key matches the first: %v (%v)", ca.Name, len(b), err == nil && keyMatches(b[0].PublicKey, key), err)
		}
	}
	if _, err := DropPrevious(h.pki, h.kube); err != nil {
		t.Fatal(err)
	}
	for _, r := range h.ensure(t, cfg, h.opts()) {
		if r.Action != Kept {
			t.Errorf("Ensure after the rotation: %s %s (%s)", r.Name, r.Action, r.Reason)
		}
	}
}
