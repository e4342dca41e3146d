package pki

import (
	"crypto/tls"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// embeddedData matches the base64 certificate and key data, which is
// random on every run.
var embeddedData = regexp.MustCompile(`(?m)^(\s*(?:certificate-authority-data|client-certificate-data|client-key-data):) \S+$`)

func TestKubeconfigGolden(t *testing.T) {
	h := newTestHost(t)
	h.ensure(t, testConfig(t, "m1"), h.opts())
	for _, spec := range Kubeconfigs() {
		t.Run(spec.Name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(h.kube, spec.Name))
			if err != nil {
				t.Fatal(err)
			}
			got := embeddedData.ReplaceAll(data, []byte("$1 <masked>"))
			golden := filepath.Join("testdata", spec.Name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pki -run TestKubeconfigGolden -update)", err)
			}
			if string(got) != string(want) {
				t.Errorf("%s differs from %s:\n%s", spec.Name, golden, got)
			}
		})
	}
}

// TestKubeconfigsWork loads each kubeconfig the way client-go does and
// checks the embedded credentials: they form a usable TLS client for the
// right user.
func TestKubeconfigsWork(t *testing.T) {
	h := newTestHost(t)
	h.ensure(t, testConfig(t, "m1"), h.opts())
	ca := readCert(t, h.file("ca.crt"))
	for _, spec := range Kubeconfigs() {
		data, _ := os.ReadFile(filepath.Join(h.kube, spec.Name))
		rc, err := clientcmd.RESTConfigFromKubeConfig(data)
		if err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
		tc, err := rest.TLSConfigFor(rc)
		if err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
		if tc.RootCAs == nil || tc.GetClientCertificate == nil {
			t.Fatalf("%s: TLS config without roots or client certificate", spec.Name)
		}
		if cc, err := tc.GetClientCertificate(&tls.CertificateRequestInfo{}); err != nil || len(cc.Certificate) == 0 {
			t.Fatalf("%s: client certificate: %v", spec.Name, err)
		}
		leaf, err := ParseCerts(rc.CertData)
		if err != nil {
			t.Fatal(err)
		}
		c := leaf[0]
		if c.Subject.CommonName != spec.User || strings.Join(c.Subject.Organization, ",") != strings.Join(spec.Organizations, ",") {
			t.Errorf("%s: subject %v", spec.Name, c.Subject)
		}
		if err := c.CheckSignatureFrom(ca); err != nil {
			t.Errorf("%s: %v", spec.Name, err)
		}
	}
}

func TestKubeconfigStale(t *testing.T) {
	tests := []struct {
		name   string
		change func(cfg *Config, opts *Options)
		// stale kubeconfigs, and the reason the first one gives
		stale  []string
		reason string
	}{
		{"endpoint moved", func(cfg *Config, _ *Options) {
			cfg.APIServerURL = "https://k8s2.example.com:6443"
		}, []string{"admin.conf", "super-admin.conf"}, "server is https://k8s.example.com:6443, want https://k8s2.example.com:6443"},
		{"local apiserver moved", func(cfg *Config, _ *Options) {
			cfg.LocalAPIServerURL = "https://10.0.0.99:6443"
		}, []string{"controller-manager.conf", "scheduler.conf", "anvil-vip.conf", "anvil-approver.conf"}, "want https://10.0.0.99:6443"},
		{"client certificates expired", func(_ *Config, opts *Options) {
			opts.Now = time.Now().Add(400 * 24 * time.Hour)
		}, []string{"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "anvil-vip.conf", "anvil-approver.conf"}, "client certificate expired on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHost(t)
			cfg := testConfig(t, "m1")
			h.ensure(t, cfg, h.opts())
			before := snapshot(t, h.root)
			opts := h.opts()
			tt.change(&cfg, &opts)

			_, err := Ensure(h.pki, cfg, opts)
			first := filepath.Join(h.kube, tt.stale[0])
			if !errors.Is(err, ErrNeedsForce) || !strings.Contains(err.Error(), first) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %v\nwant a refusal naming %s saying %q", err, first, tt.reason)
			}
			requireUnchanged(t, before, snapshot(t, h.root))

			opts.Force = true
			res, err := Ensure(h.pki, cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			a := actions(res)
			for _, spec := range Kubeconfigs() {
				want := Kept
				for _, s := range tt.stale {
					if s == spec.Name {
						want = Reissued
					}
				}
				if a[spec.Name] != want {
					t.Errorf("%s: %s, want %s", spec.Name, a[spec.Name], want)
				}
			}
			opts.Force = false
			for _, r := range h.ensure(t, cfg, opts) {
				if r.Action != Kept {
					t.Errorf("after force: %s %s", r.Name, r.Action)
				}
			}
		})
	}
}

// TestKubeconfigOldKubeadmAdmin: an admin.conf from before kubeadm split
// admin and super-admin (system:masters) is stale, not silently kept.
func TestKubeconfigOldKubeadmAdmin(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m1")
	h.ensure(t, cfg, h.opts())
	copyFile(t, filepath.Join(h.kube, "super-admin.conf"), filepath.Join(h.kube, "admin.conf"))
	_, err := Ensure(h.pki, cfg, h.opts())
	if !errors.Is(err, ErrNeedsForce) || !strings.Contains(err.Error(),
		"client certificate subject is CN=kubernetes-super-admin,O=system:masters, want CN=kubernetes-admin,O=kubeadm:cluster-admins") {
		t.Fatalf("err = %v", err)
	}
}

// TestSuperAdminOnDemand: super-admin.conf (system:masters, past RBAC) is
// made only when asked, as on the first master; elsewhere nothing makes it
// by the way (generate, renew all), and once made on purpose it is kept,
// checked and renewed like the others.
func TestSuperAdminOnDemand(t *testing.T) {
	h := newTestHost(t)
	cfg := testConfig(t, "m2")
	joined := Options{KubeconfigDir: h.kube}
	for _, r := range h.ensure(t, cfg, joined) {
		if r.Name == SuperAdminKubeconfig {
			t.Errorf("a joined master got %s: %+v", SuperAdminKubeconfig, r)
		}
	}
	if _, err := Renew(h.pki, cfg, []string{RenewAll}, joined); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.kube, SuperAdminKubeconfig)); !os.IsNotExist(err) {
		t.Fatalf("renew all made %s: %v", SuperAdminKubeconfig, err)
	}
	onDemand := joined
	onDemand.SuperAdmin = true
	if res := h.ensure(t, cfg, onDemand); !slices.ContainsFunc(res, func(r Result) bool { return r.Name == SuperAdminKubeconfig && r.Action == Created }) {
		t.Fatalf("--super-admin did not make it: %+v", res)
	}
	if res := h.ensure(t, cfg, joined); !slices.ContainsFunc(res, func(r Result) bool { return r.Name == SuperAdminKubeconfig && r.Action == Kept }) {
		t.Errorf("an existing one is not kept: %+v", res)
	}
	exp, err := CheckExpiration(h.pki, joined)
	if err != nil || !slices.ContainsFunc(exp.Certificates, func(e Expiry) bool { return e.Name == SuperAdminKubeconfig && !e.Missing }) {
		t.Errorf("check-expiration does not show the one made: %v", err)
	}
	res, err := Renew(h.pki, cfg, []string{RenewAll}, joined)
	if err != nil || !slices.ContainsFunc(res, func(r Result) bool { return r.Name == SuperAdminKubeconfig && r.Action == Renewed }) {
		t.Errorf("renew all does not renew it: %+v %v", res, err)
	}
}
