package support

import (
	"bytes"
	"strings"
	"testing"
)

// Secrets as the cluster has them, each with the part that must never
// appear in a bundle.
const (
	testToken     = "abcdef.0123456789abcdef"
	testAge       = "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS3290GQ"
	testKeyBody   = "MC4CAQAwBQYDK2VwBCIEIDlnE8UuIbsJ6hI6aT6Dpy3sM4Nv1cJ2pB8xZqkKk1bQ"
	testKeyData   = "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUtleURhdGE="
	testCertData  = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJDZXJ0RGF0YQ=="
	testEncSecret = "c2VjcmV0LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGVzLWxvbmchIQ=="
	testBearer    = "eyJhbGciOiJSUzI1NiJ9.c2VydmljZWFjY291bnQ.c2lnbmF0dXJl"
)

func pemKey(kind string) string {
	return "-----BEGIN " + kind + "-----\n" + testKeyBody + "\n-----END " + kind + "-----\n"
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		gone     []string
		kept     []string
	}{
		{"PEM private keys of every kind", pemKey("PRIVATE KEY") + pemKey("EC PRIVATE KEY") + pemKey("RSA PRIVATE KEY") + pemKey("ENCRYPTED PRIVATE KEY"),
			[]string{testKeyBody}, []string{"-----BEGIN EC PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"}},
		{"a certificate is kept", "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n",
			nil, []string{"MIIBcert"}},
		{"a key a log cut short", "line\n-----BEGIN PRIVATE KEY-----\n" + testKeyBody,
			[]string{testKeyBody}, []string{"line\n"}},
		{"a key in a JSON string", `{"key":"-----BEGIN PRIVATE KEY-----\n` + testKeyBody + `\n-----END PRIVATE KEY-----\n","other":1}`,
			[]string{testKeyBody}, []string{`"other":1`}},
		{"bootstrap token in a log line", "level=info msg=\"join with " + testToken + " now\"",
			[]string{testToken, "0123456789abcdef"}, []string{"join with ", " now"}},
		{"bootstrap token glued to other text", "x" + testToken + "y",
			[]string{"0123456789abcdef"}, nil},
		{"kubeconfig credentials", "users:\n- name: admin\n  user:\n    client-certificate-data: " + testCertData + "\n    client-key-data: " + testKeyData + "\n    token: " + testBearer + "\nclusters:\n- cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: Q0FEQVRB\n",
			[]string{testCertData, testKeyData, testBearer}, []string{"server: https://10.0.0.1:6443", "certificate-authority-data: Q0FEQVRB", "client-key-data: " + Redacted}},
		{"kubeconfig as JSON", `{"user":{"client-key-data":"` + testKeyData + `","token":"` + testBearer + `"},"server":"https://h:6443"}`,
			[]string{testKeyData, testBearer}, []string{`"server":"https://h:6443"`}},
		{"encryption config", "resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: " + testEncSecret + "\n  - identity: {}\n",
			[]string{testEncSecret}, []string{"name: key1", "identity: {}"}},
		{"age identity", "# created: 2024\n# public key: age1qyqszqgpqyqszqgpqyqszqgpqyqszqgp\n" + testAge + "\n",
			[]string{testAge, testAge[len("AGE-SECRET-KEY-"):]}, []string{"age1qyqszqgpqyqszqgpqyqszqgpqyqszqgp"}},
		{"age identity in lower case", strings.ToLower(testAge),
			[]string{strings.ToLower(testAge[len("AGE-SECRET-KEY-"):])}, nil},
		{"nothing secret stays as it is", "kind: Node\nmetadata:\n  name: m1\nstatus: Ready\ntokenTTL: 1h\n",
			nil, []string{"kind: Node\nmetadata:\n  name: m1\nstatus: Ready\ntokenTTL: 1h\n"}},
		{"an empty field stays", "token:\n  value\n", nil, []string{"token:\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := string(Redact([]byte(tc.in)))
			for _, s := range tc.gone {
				if strings.Contains(out, s) {
					t.Errorf("%q is still there:\n%s", s, out)
				}
			}
			for _, s := range tc.kept {
				if !strings.Contains(out, s) {
					t.Errorf("%q is gone:\n%s", s, out)
				}
			}
			if again := string(Redact([]byte(out))); again != out {
				t.Errorf("a second Redact changed it:\n%s\nto\n%s", out, again)
			}
		})
	}
}

// FuzzRedact checks that whatever surrounds a secret, it does not survive,
// and that Redact is idempotent.
func FuzzRedact(f *testing.F) {
	f.Add("", "")
	f.Add("token: ", "\n")
	f.Add("x", "y")
	f.Add("-----BEGIN PRIVATE KEY-----", "")
	f.Add(`{"token":"`, `"}`)
	f.Add("abcdef", ".0123456789abcdef")
	secrets := []struct{ wrap, body string }{
		{testToken, "0123456789abcdef"},
		{testAge, testAge[len("AGE-SECRET-KEY-1"):]},
		{pemKey("EC PRIVATE KEY"), testKeyBody},
		{"\nclient-key-data: " + testKeyData + "\n", testKeyData},
		{"\n    token: " + testBearer + "\n", testBearer},
		{"\n        secret: " + testEncSecret + "\n", testEncSecret},
	}
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		for _, s := range secrets {
			out := Redact([]byte(prefix + s.wrap + suffix))
			if bytes.Contains(out, []byte(s.body)) && !strings.Contains(prefix+suffix, s.body) {
				t.Fatalf("%q survives in %q", s.body, out)
			}
		}
		out := Redact([]byte(prefix + suffix))
		if tokenRE.Match(out) || bytes.Contains(bytes.ToUpper(out), []byte("AGE-SECRET-KEY-1")) {
			t.Fatalf("a token or an age key survives in %q", out)
		}
		if again := Redact(out); !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q then %q", out, again)
		}
	})
}
