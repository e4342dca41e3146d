package main

import (
	"bufio"
	"strings"
	"testing"
)

// TestControlPlaneJoinSecrets: the token and the certificate key share
// stdin, one line each; every way of getting them wrong is refused before
// anything is contacted, and the error never repeats the secret.
func TestControlPlaneJoinSecrets(t *testing.T) {
	const (
		token = "abcdef.0123456789abcdef"
		key   = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	)
	hash := "sha256:" + strings.Repeat("ab", 32)

	f := &joinFlags{tokenFile: "-", certKeyFile: "-", controlPlane: true}
	in := bufio.NewReader(strings.NewReader(token + "\n" + key + "\n"))
	tok, err := f.readToken(in)
	if err != nil || tok.Reveal() != token {
		t.Fatalf("token from line 1: %v", err)
	}
	k, err := f.readCertificateKey(in)
	if err != nil || k.Reveal() != key {
		t.Fatalf("key from line 2: %v", err)
	}

	base := []string{"join", "https://127.0.0.1:1", "--control-plane", "--ca-cert-hash", hash, "--timeout", "1s"}
	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"no key", token + "\n", []string{"--token-file", "-"}, "needs the certificate key"},
		{"key missing from stdin", token + "\n", []string{"--token-file", "-", "--certificate-key-file", "-"}, "certificate-key on stdin: empty"},
		{"short key", token + "\n" + key[:10] + "\n", []string{"--token-file", "-", "--certificate-key-file", "-"}, "64 hexadecimal digits"},
		{"key twice", token + "\n", []string{"--token-file", "-", "--certificate-key", key, "--certificate-key-file", "-"}, "not both"},
		{"key file missing", token + "\n", []string{"--token-file", "-", "--certificate-key-file", "/nonexistent/key"}, "/nonexistent/key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := runAnvil(t, tc.stdin, append(base, tc.args...)...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, want an error with %q:\n%s", code, tc.want, errOut)
			}
			if strings.Contains(errOut, "0123456789abcdef") || strings.Contains(errOut, key) {
				t.Errorf("the error repeats a secret:\n%s", errOut)
			}
		})
	}

	_, errOut, code := runAnvil(t, token+"\n", "join", "https://127.0.0.1:1", "--token-file", "-", "--ca-cert-hash", hash, "--certificate-key", key)
	if code == 0 || !strings.Contains(errOut, "add --control-plane") {
		t.Errorf("a worker join with a certificate key: exit %d\n%s", code, errOut)
	}
}
