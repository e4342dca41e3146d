package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput: every kind of bad input is a one-line error naming the
// file, and the directories are exactly as they were — even where the
// same run would otherwise have created or re-issued other files.
func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		// break_ damages a complete PKI and returns the file the error
		// must name.
		break_ func(t *testing.T, h testHost) string
		want   string
	}{
		{"corrupt CA PEM", func(t *testing.T, h testHost) string {
			return overwrite(t, h.file("ca.crt"), "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
		}, "no CERTIFICATE PEM block"},
		{"truncated leaf certificate", func(t *testing.T, h testHost) string {
			data, _ := os.ReadFile(h.file("etcd/peer.crt"))
			return overwrite(t, h.file("etcd/peer.crt"), string(data[:len(data)/2]))
		}, "no CERTIFICATE PEM block"},
		{"garbage DER in a PEM block", func(t *testing.T, h testHost) string {
			return overwrite(t, h.file("apiserver-kubelet-client.crt"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}, "parse "},
		{"corrupt leaf key", func(t *testing.T, h testHost) string {
			return overwrite(t, h.file("apiserver-etcd-client.key"), "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
		}, "parse "},
		{"empty CA key", func(t *testing.T, h testHost) string {
			return overwrite(t, h.file("etcd/ca.key"), "")
		}, "no PRIVATE KEY PEM block"},
		{"corrupt sa.key", func(t *testing.T, h testHost) string {
			return overwrite(t, h.file("sa.key"), "hello")
		}, "no PRIVATE KEY PEM block"},
		{"corrupt sa.pub", func(t *testing.T, h testHost) string {
			return overwrite(t, h.file("sa.pub"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
		}, "parse "},
		{"corrupt kubeconfig", func(t *testing.T, h testHost) string {
			return overwrite(t, filepath.Join(h.kube, "scheduler.conf"), "clusters: [\n")
		}, "parse "},
		{"CA key does not match its cert", func(t *testing.T, h testHost) string {
			copyFile(t, h.file("etcd/ca.key"), h.file("ca.key"))
			return h.file("ca.key")
		}, "does not match"},
		{"CA key without its cert", func(t *testing.T, h testHost) string {
			os.Remove(h.file("front-proxy-ca.crt"))
			return h.file("front-proxy-ca.key")
		}, "exists without"},
		{"sa.pub of another key", func(t *testing.T, h testHost) string {
			other := newTestHost(t)
			other.ensure(t, testConfig(t, "m1"), Options{})
			copyFile(t, other.file("sa.pub"), h.file("sa.pub"))
			return h.file("sa.pub")
		}, "is not the public key of"},
		{"a leaf from a foreign CA", func(t *testing.T, h testHost) string {
			other := newTestHost(t)
			other.ensure(t, testConfig(t, "m1"), Options{})
			copyFile(t, other.file("etcd/healthcheck-client.crt"), h.file("etcd/healthcheck-client.crt"))
			return h.file("etcd/healthcheck-client.crt")
		}, "not signed by"},
		{"a foreign leaf without its key", func(t *testing.T, h testHost) string {
			other := newTestHost(t)
			other.ensure(t, testConfig(t, "m1"), Options{})
			copyFile(t, other.file("front-proxy-client.crt"), h.file("front-proxy-client.crt"))
			os.Remove(h.file("front-proxy-client.key"))
			return h.file("front-proxy-client.crt")
		}, "not signed by"},
		{"a kubeconfig from a foreign CA", func(t *testing.T, h testHost) string {
			other := newTestHost(t)
			other.ensure(t, testConfig(t, "m1"), other.opts())
			copyFile(t, filepath.Join(other.kube, "admin.conf"), filepath.Join(h.kube, "admin.conf"))
			return filepath.Join(h.kube, "admin.conf")
		}, "trusts a different CA"},
		{"a file where the etcd directory should be", func(t *testing.T, h testHost) string {
			if err := os.RemoveAll(h.file("etcd")); err != nil {
				t.Fatal(err)
			}
			return overwrite(t, h.file("etcd"), "")
		}, "not a directory"},
		{"a directory where a certificate should be", func(t *testing.T, h testHost) string {
			os.Remove(h.file("front-proxy-client.crt"))
			if err := os.Mkdir(h.file("front-proxy-client.crt"), 0o700); err != nil {
				t.Fatal(err)
			}
			return h.file("front-proxy-client.crt")
		}, "is a directory"},
		{"a file where the kubeconfig directory should be", func(t *testing.T, h testHost) string {
			// /etc/kubernetes, which holds the PKI directory too, is a file.
			if err := os.RemoveAll(h.kube); err != nil {
				t.Fatal(err)
			}
			return overwrite(t, h.kube, "")
		}, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHost(t)
			cfg := testConfig(t, "m1")
			h.ensure(t, cfg, h.opts())
			bad := tt.break_(t, h)
			// Something else is missing too, so that a run that did not
			// check everything first would write before failing.
			os.Remove(h.file("apiserver.crt"))
			os.Remove(h.file("apiserver.key"))
			before := snapshot(t, h.root)

			runs := map[string]func() error{
				"Ensure": func() error { _, err := Ensure(h.pki, cfg, h.opts()); return err },
				"Renew":  func() error { _, err := Renew(h.pki, cfg, []string{RenewAll}, h.opts()); return err },
			}
			if strings.HasPrefix(filepath.Base(bad), "sa.") {
				delete(runs, "Renew") // it never reads the service-account pair
			}
			for name, run := range runs {
				err := run()
				if err == nil {
					t.Fatalf("%s: no error", name)
				}
				msg := err.Error()
				if !strings.Contains(msg, bad) || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
					t.Errorf("%s: error %q\nwant one line naming %s and saying %q", name, msg, bad, tt.want)
				}
				requireUnchanged(t, before, snapshot(t, h.root))
			}
		})
	}
}

// TestBadInputCheckExpiration: the read-only commands fail the same way.
func TestBadInputCheckExpiration(t *testing.T) {
	h := newTestHost(t)
	h.ensure(t, testConfig(t, "m1"), h.opts())
	bad := overwrite(t, h.file("etcd/server.crt"), "junk")
	_, err := CheckExpiration(h.pki, h.opts())
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("CheckExpiration: %v", err)
	}
	_, err = CAHashFromFile(overwrite(t, h.file("ca.crt"), "junk"))
	if err == nil || !strings.Contains(err.Error(), h.file("ca.crt")) {
		t.Errorf("CAHashFromFile: %v", err)
	}
	_, err = CheckExpiration(filepath.Join(h.root, "nowhere"), Options{})
	if err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("CheckExpiration of a missing directory: %v", err)
	}
}

func overwrite(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
