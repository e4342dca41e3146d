package etcd

import (
	"net/url"
	"strings"
	"testing"

	"go.etcd.io/etcd/server/v3/embed"
)

// TestCheckEtcdSecurity: `anvil etcd` serves only with mutual TLS on every
// client, client-HTTP and peer URL, and never with auto-TLS.
func TestCheckEtcdSecurity(t *testing.T) {
	u := func(s string) []url.URL {
		p, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return []url.URL{*p}
	}
	secure := func() *embed.Config {
		cfg := embed.NewConfig()
		cfg.ListenClientUrls = u("https://127.0.0.1:2379")
		cfg.ListenClientHttpUrls = u("https://127.0.0.1:2382")
		cfg.ListenPeerUrls = u("https://10.0.0.11:2380")
		for _, ti := range []*struct{ cert, key, ca *string }{
			{&cfg.ClientTLSInfo.CertFile, &cfg.ClientTLSInfo.KeyFile, &cfg.ClientTLSInfo.TrustedCAFile},
			{&cfg.PeerTLSInfo.CertFile, &cfg.PeerTLSInfo.KeyFile, &cfg.PeerTLSInfo.TrustedCAFile},
		} {
			*ti.cert, *ti.key, *ti.ca = "server.crt", "server.key", "ca.crt"
		}
		cfg.ClientTLSInfo.ClientCertAuth = true
		cfg.PeerTLSInfo.ClientCertAuth = true
		return cfg
	}
	if err := checkSecurity(secure(), "etcd.yaml"); err != nil {
		t.Fatalf("the secure configuration was refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*embed.Config)
		want   string
	}{
		{"plain client URL", func(c *embed.Config) { c.ListenClientUrls = u("http://127.0.0.1:2379") }, "http://127.0.0.1:2379 is not https"},
		{"plain client HTTP URL", func(c *embed.Config) { c.ListenClientHttpUrls = u("http://127.0.0.1:2382") }, "http://127.0.0.1:2382 is not https"},
		{"plain peer URL", func(c *embed.Config) { c.ListenPeerUrls = u("http://10.0.0.11:2380") }, "http://10.0.0.11:2380 is not https"},
		{"no client certificates", func(c *embed.Config) { c.ClientTLSInfo.ClientCertAuth = false }, "client-transport-security.client-cert-auth must be true"},
		{"no peer certificates", func(c *embed.Config) { c.PeerTLSInfo.ClientCertAuth = false }, "peer-transport-security.client-cert-auth must be true"},
		{"no CA", func(c *embed.Config) { c.ClientTLSInfo.TrustedCAFile = "" }, "client-transport-security needs cert-file, key-file and trusted-ca-file"},
		{"auto-TLS", func(c *embed.Config) { c.PeerAutoTLS = true }, "auto-tls must be off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := secure()
			tc.change(cfg)
			err := checkSecurity(cfg, "/etc/anvil/etcd.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/etc/anvil/etcd.yaml") {
				t.Errorf("got %v, want an error naming the file and %q", err, tc.want)
			}
		})
	}
}
