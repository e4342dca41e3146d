package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
)

// runAnvil runs anvil with args and stdin, and returns stdout, stderr
// with the error main would print, and the exit code main would use.
func runAnvil(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(strings.NewReader(stdin), &out, &errOut)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return out.String(), errOut.String() + "error: " + err.Error(), exitCode(err)
	}
	return out.String(), errOut.String(), 0
}

// TestJoinHelp: `anvil join --help` shows the phases and examples a
// reader can paste, with the token on stdin; `anvil agent --help` shows
// how the agent is run.
func TestJoinHelp(t *testing.T) {
	out, _, code := runAnvil(t, "", "join", "--help")
	if code != 0 {
		t.Fatalf("join --help: exit %d", code)
	}
	for _, p := range agent.JoinPhaseNames(v1alpha1.RuntimeContainerd) {
		if !strings.Contains(out, p) {
			t.Errorf("join --help does not list phase %s", p)
		}
	}
	for _, want := range []string{"Examples:", "--token-file - --ca-cert-hash sha256:", "--layout process --root", "--token-file FILE|-"} {
		if !strings.Contains(out, want) {
			t.Errorf("join --help lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runAnvil(t, "", "agent", "--help")
	if code != 0 || !strings.Contains(out, "anvil agent --config /etc/anvil/agent.yaml") || !strings.Contains(out, "SIGTERM") {
		t.Errorf("agent --help: exit %d\n%s", code, out)
	}
}

// TestJoinRefusesBadInput: what an operator gets wrong on the command
// line is refused before anything is contacted or written, the error
// says which flag, and a token is never repeated back.
func TestJoinRefusesBadInput(t *testing.T) {
	const secret = "0123456789abcdef"
	hash := "sha256:" + strings.Repeat("ab", 32)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("abcdef."+secret+"X\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing listens on port 1 of loopback: should a case get past the
	// flags, it fails there instead of reaching anything.
	const ep = "https://127.0.0.1:1"
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no endpoint", "", []string{"--token-file", "-", "--ca-cert-hash", hash}, "apiserver"},
		{"no token", "", []string{ep, "--ca-cert-hash", hash}, "token"},
		{"token twice", "", []string{ep, "--token", "abcdef." + secret, "--token-file", "-", "--ca-cert-hash", hash}, "once"},
		{"malformed token flag", "", []string{ep, "--token", "abcdef." + secret + "Z", "--ca-cert-hash", hash}, "--token"},
		{"malformed token on stdin", "abcdef." + secret + "Z\n", []string{ep, "--token-file", "-", "--ca-cert-hash", hash}, "stdin"},
		{"empty stdin", "", []string{ep, "--token-file", "-", "--ca-cert-hash", hash}, "stdin"},
		{"malformed token in a file", "", []string{ep, "--token-file", tokenFile, "--ca-cert-hash", hash}, tokenFile},
		{"missing token file", "", []string{ep, "--token-file", tokenFile + ".missing", "--ca-cert-hash", hash}, tokenFile + ".missing"},
		{"no CA hash", "abcdef." + secret + "\n", []string{ep, "--token-file", "-"}, "--ca-cert-hash"},
		{"malformed CA hash", "abcdef." + secret + "\n", []string{ep, "--token-file", "-", "--ca-cert-hash", "sha1:abc"}, "--ca-cert-hash"},
		{"bad node IP", "abcdef." + secret + "\n", []string{ep, "--token-file", "-", "--ca-cert-hash", hash, "--node-ip", "10.0.0"}, "--node-ip"},
		{"unknown runtime", "abcdef." + secret + "\n", []string{ep, "--token-file", "-", "--ca-cert-hash", hash, "--runtime", "docker"}, "--runtime"},
		{"bad endpoint", "abcdef." + secret + "\n", []string{"http://10.0.0.1:6443", "--token-file", "-", "--ca-cert-hash", hash}, "https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			args := append([]string{"join", "--node-name", "w1", "--layout", "process", "--root", root, "--timeout", "1s"}, tt.args...)
			_, errOut, code := runAnvil(t, tt.stdin, args...)
			if code == 0 {
				t.Fatalf("join accepted %v", tt.args)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("error does not mention %q:\n%s", tt.want, errOut)
			}
			if strings.Contains(errOut, secret) {
				t.Errorf("error repeats the token's secret:\n%s", errOut)
			}
			if entries, _ := os.ReadDir(root); len(entries) > 0 {
				t.Errorf("a refused join wrote %v", entries)
			}
		})
	}
}
