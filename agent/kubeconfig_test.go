package agent

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/pki"
)

func TestMintCredentials(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	now := time.Now()
	tests := []struct {
		name     string
		validity time.Duration
		// notAfter is the expected end, to the minute.
		notAfter time.Time
	}{
		{"default validity, capped by the CA", 0, ca.cert.NotAfter},
		{"an hour", time.Hour, now.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds, err := MintCredentials(MintOptions{NodeName: "m1", Server: "https://10.0.0.1:6443", CACert: ca.cert, CAKey: ca.key, Validity: tt.validity, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			tc, err := creds.cert()
			if err != nil {
				t.Fatal(err)
			}
			c := tc.Leaf
			if c.Subject.CommonName != "system:node:m1" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "system:nodes" {
				t.Errorf("subject %v", c.Subject)
			}
			if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || c.IsCA {
				t.Errorf("usages %v, CA %v", c.ExtKeyUsage, c.IsCA)
			}
			if err := c.CheckSignatureFrom(ca.cert); err != nil {
				t.Error(err)
			}
			if d := c.NotAfter.Sub(tt.notAfter); d > time.Minute || d < -time.Minute {
				t.Errorf("not after %s, want %s", c.NotAfter, tt.notAfter)
			}
			if why := credentialsMismatch(creds, pki.CAHashOf(ca.cert), "m1", now); why != "" {
				t.Error(why)
			}
		})
	}
	if _, err := MintCredentials(MintOptions{NodeName: "m1"}); err == nil {
		t.Error("minted without a CA")
	}
}

func TestKubeconfigRoundTrip(t *testing.T) {
	ca := newTestCA(t, "kubernetes")
	creds, err := MintCredentials(MintOptions{NodeName: "w1", Server: "https://10.0.0.1:6443", CACert: ca.cert, CAKey: ca.key})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent", "kubeconfig")
	if err := writeKubeconfig(path, "w1", creds); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	got, err := ReadKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Server != creds.Server || string(got.CertPEM) != string(creds.CertPEM) || string(got.KeyPEM) != string(creds.KeyPEM) || string(got.CAPEM) != string(creds.CAPEM) {
		t.Error("round trip changed the credentials")
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "system:node:w1@kubernetes") {
		t.Errorf("context name:\n%s", b)
	}
}

func TestReadKubeconfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, content, want string }{
		{"not yaml", "{", "kubeconfig"},
		{"no context", "apiVersion: v1\nkind: Config\ncurrent-context: x\n", `current context "x" does not exist`},
		{"files, not data", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://a:6443", certificate-authority: /etc/ca.crt}}]
users: [{name: u, user: {client-certificate: /a.crt, client-key: /a.key}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, "no embedded certificate-authority-data"},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
		os.WriteFile(p, []byte(tt.content), 0o600)
		if _, err := ReadKubeconfig(p); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming %s with %q", tt.name, err, p, tt.want)
		}
	}
	if _, err := ReadKubeconfig(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing kubeconfig read fine")
	}
}

func TestCredentialsMismatch(t *testing.T) {
	ca, other := newTestCA(t, "kubernetes"), newTestCA(t, "other")
	creds, _ := MintCredentials(MintOptions{NodeName: "w1", CACert: ca.cert, CAKey: ca.key, Validity: time.Hour})
	now := time.Now()
	tests := []struct {
		name string
		pin  pki.CAHash
		node string
		at   time.Time
		want string
	}{
		{"matches", pki.CAHashOf(ca.cert), "w1", now, ""},
		{"another cluster", pki.CAHashOf(other.cert), "w1", now, "another cluster's CA"},
		{"another node", pki.CAHashOf(ca.cert), "w2", now, "belongs to system:node:w1"},
		{"expired", pki.CAHashOf(ca.cert), "w1", now.Add(2 * time.Hour), "expired"},
	}
	for _, tt := range tests {
		got := credentialsMismatch(creds, tt.pin, tt.node, tt.at)
		if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestRotationDeadline(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(100 * time.Hour)
	for range 200 {
		d := rotationDeadline(nb, na)
		if d.Before(nb.Add(70*time.Hour)) || d.After(nb.Add(90*time.Hour)) {
			t.Fatalf("deadline %s outside 70–90%% of the life", d.Sub(nb))
		}
	}
}
