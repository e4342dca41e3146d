package pki

import (
	"bytes"
	"crypto/x509"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
)

// testCluster is a cluster file built in Go, so pki's tests do not depend
// on the decoder.
func testCluster() *v1alpha1.Cluster {
	return &v1alpha1.Cluster{
		APIVersion: v1alpha1.APIVersion,
		Kind:       v1alpha1.KindCluster,
		Name:       "example",
		ControlPlane: v1alpha1.ControlPlane{
			Endpoint: "k8s.example.com",
			Port:     6443,
			VIP:      netip.MustParseAddr("10.0.0.10"),
		},
		Hosts: []v1alpha1.Host{
			{Name: "m1", Address: netip.MustParseAddr("192.168.1.11"), InternalAddress: netip.MustParseAddr("10.0.0.11"), Role: v1alpha1.RoleMaster},
			{Name: "m2", Address: netip.MustParseAddr("10.0.0.12"), Role: v1alpha1.RoleMaster},
			{Name: "m3", Address: netip.MustParseAddr("10.0.0.13"), Role: v1alpha1.RoleMaster},
			{Name: "w1", Address: netip.MustParseAddr("10.0.0.21"), Role: v1alpha1.RoleWorker},
		},
		Networking: v1alpha1.Networking{
			ServiceCIDR:   netip.MustParsePrefix("10.96.0.0/12"),
			PodCIDR:       netip.MustParsePrefix("10.244.0.0/16"),
			ClusterDomain: "cluster.local",
		},
		PKI: v1alpha1.PKI{
			KeyAlgorithm: v1alpha1.ECDSAP256,
			CAValidity:   v1alpha1.Days(3650),
			CertValidity: v1alpha1.Days(365),
			CertSANs:     []string{"api.example.com", "203.0.113.7"},
		},
	}
}

func testConfig(t testing.TB, node string) Config {
	t.Helper()
	cfg, err := ConfigFromCluster(testCluster(), node)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testHost is a scratch host root with the two directories Ensure writes.
type testHost struct {
	root, pki, kube string
}

func newTestHost(t testing.TB) testHost {
	root := t.TempDir()
	return testHost{root: root, pki: filepath.Join(root, "etc/kubernetes/pki"), kube: filepath.Join(root, "etc/kubernetes")}
}

// opts are the first master's: kubeconfigs, super-admin.conf among them.
func (h testHost) opts() Options { return Options{KubeconfigDir: h.kube, SuperAdmin: true} }

func (h testHost) file(rel string) string { return filepath.Join(h.pki, rel) }

// ensure runs Ensure and fails the test on error.
func (h testHost) ensure(t testing.TB, cfg Config, opts Options) []Result {
	t.Helper()
	res, err := Ensure(h.pki, cfg, opts)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return res
}

// entry is one file or directory as a snapshot saw it.
type entry struct {
	mode  fs.FileMode
	mtime time.Time
	data  []byte
}

// snapshot records every file and directory under root: mode, mtime and
// content, so a test can prove that nothing at all changed.
func snapshot(t testing.TB, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{mode: fi.Mode(), mtime: fi.ModTime()}
		if fi.Mode().IsRegular() {
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		out[p] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// changed lists the paths that differ between two snapshots.
func changed(before, after map[string]entry) []string {
	var out []string
	for p, b := range before {
		a, ok := after[p]
		if !ok || a.mode != b.mode || !a.mtime.Equal(b.mtime) || !bytes.Equal(a.data, b.data) {
			out = append(out, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func requireUnchanged(t testing.TB, before, after map[string]entry) {
	t.Helper()
	if c := changed(before, after); len(c) > 0 {
		t.Fatalf("files changed:\n  %s", strings.Join(c, "\n  "))
	}
}

// actions maps result names to actions.
func actions(res []Result) map[string]Action {
	m := map[string]Action{}
	for _, r := range res {
		m[r.Name] = r.Action
	}
	return m
}

func readCert(t testing.TB, path string) *x509.Certificate {
	t.Helper()
	c, err := ReadCertFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// requireOpenSSL returns the openssl binary. Without it the test is skipped,
// except under CI=true where a missing prerequisite fails the run.
func requireOpenSSL(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl is required under CI=true: %v", err)
		}
		t.Skipf("openssl not found: %v", err)
	}
	return p
}

// allLeafCertFiles are the leaf certificates Ensure writes, relative to the
// PKI directory, with the CA file that must verify them.
func allLeafCertFiles() map[string]string {
	cas := map[string]string{}
	for _, ca := range CAs() {
		cas[ca.Name] = CertFile(ca.BaseName)
	}
	out := map[string]string{}
	for _, s := range Certificates() {
		out[CertFile(s.BaseName)] = cas[s.CA]
	}
	return out
}
