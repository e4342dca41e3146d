package pki

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

var tokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

func TestGenerateToken(t *testing.T) {
	seen := map[string]bool{}
	counts := map[rune]int{}
	for range 2000 {
		tok, err := GenerateToken()
		if err != nil {
			t.Fatal(err)
		}
		s := tok.Reveal()
		if !tokenRE.MatchString(s) {
			t.Fatalf("%q does not match %s", s, tokenRE)
		}
		if seen[s] {
			t.Fatalf("%q generated twice", s)
		}
		seen[s] = true
		for _, r := range strings.ReplaceAll(s, ".", "") {
			counts[r]++
		}
		if p, err := ParseToken(s); err != nil || p != tok {
			t.Fatalf("ParseToken(%q) = %v, %v", s, p, err)
		}
	}
	// 44000 draws over 36 characters: each should be near 1222. A biased
	// modulo would put the first 4 characters ~14% above the others.
	for _, r := range tokenAlphabet {
		if n := counts[r]; n < 1000 || n > 1450 {
			t.Errorf("%c drawn %d times of 44000", r, n)
		}
	}
}

func TestParseToken(t *testing.T) {
	tests := []struct {
		in   string
		want string // error substring, or "" when valid
	}{
		{"abcdef.0123456789abcdef", ""},
		{"", "empty"},
		{"abcdef0123456789abcdef", "no '.'"},
		{"abcde.0123456789abcdef", "ID (before the '.') must be 6"},
		{"ABCDEF.0123456789abcdef", "ID (before the '.') must be 6"},
		{"abcdef.0123456789abcde", "secret (after the '.') must be 16"},
		{"abcdef.0123456789abcdeF", "secret (after the '.') must be 16"},
		{"abcdef.0123456789abcdef ", "secret"},
		{"abcdef.0123456789abcdef\n", "secret"},
		{"abcdef.0123456789.abcdef", "secret"},
		{" abcdef.0123456789abcdef", "ID"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			tok, err := ParseToken(tt.in)
			if tt.want == "" {
				if err != nil || tok.Reveal() != tt.in || tok.ID() != tt.in[:6] || tok.Secret() != tt.in[7:] {
					t.Fatalf("ParseToken(%q) = %q, %v", tt.in, tok.Reveal(), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if _, secret, ok := strings.Cut(tt.in, "."); ok && len(secret) > 3 && strings.Contains(err.Error(), secret) {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
}

// TestTokenRedacted: no accidental way of printing a token shows its
// secret.
func TestTokenRedacted(t *testing.T) {
	tok, err := ParseToken("abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	const redacted = "abcdef.****************"
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("join", "token", tok, "ptr", &tok)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("join", "token", tok, slog.Any("nested", struct{ T Token }{tok}))
	jsonData, _ := json.Marshal(map[string]any{"token": tok, "nested": struct{ T Token }{tok}})
	outputs := map[string]string{
		"String":    tok.String(),
		"%v":        fmt.Sprintf("%v", tok),
		"%+v":       fmt.Sprintf("%+v", tok),
		"%#v":       fmt.Sprintf("%#v", tok),
		"%s":        fmt.Sprintf("%s", tok),
		"%q":        fmt.Sprintf("%q", tok),
		"%x":        fmt.Sprintf("%x", tok),
		"%d":        fmt.Sprintf("%d", tok),
		"pointer":   fmt.Sprintf("%v", &tok),
		"in struct": fmt.Sprintf("%+v", struct{ T Token }{tok}),
		"in slice":  fmt.Sprint([]Token{tok}),
		"error":     fmt.Errorf("join with %v: failed", tok).Error(),
		"slog":      logs.String(),
		"json":      string(jsonData),
	}
	for name, out := range outputs {
		if strings.Contains(out, tok.Secret()) || strings.Contains(out, "0123456789") {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("%s: %q does not show %s", name, out, redacted)
		}
	}
	if tok.Reveal() != "abcdef.0123456789abcdef" {
		t.Errorf("Reveal() = %q", tok.Reveal())
	}
	var back struct{ T Token }
	if err := json.Unmarshal([]byte(`{"T":"abcdef.0123456789abcdef"}`), &back); err != nil || back.T != tok {
		t.Errorf("UnmarshalText: %v, %v", back.T, err)
	}
	if (Token{}).String() != "" || (Token{}).Reveal() != "" || !(Token{}).IsZero() {
		t.Error("zero Token")
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("abcdef.0123456789abcdef")
	f.Add("abcdef.0123456789abcde")
	f.Add("ABCDEF.0123456789abcdef")
	f.Add(".")
	f.Add("")
	// Errors are a fixed set of messages: none can carry part of the input.
	fixed := map[string]bool{}
	for _, s := range []string{"", "x", "x.0123456789abcdef", "abcdef.x"} {
		_, err := ParseToken(s)
		fixed[err.Error()] = true
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !tok.IsZero() {
				t.Fatal("error with a non-zero token")
			}
			if !fixed[err.Error()] {
				t.Fatalf("error %q is not one of the fixed messages", err)
			}
			return
		}
		if !tokenRE.MatchString(s) {
			t.Fatalf("accepted %q", s)
		}
		if tok.Reveal() != s || tok.ID()+"."+tok.Secret() != s {
			t.Fatalf("%q parsed to %q", s, tok.Reveal())
		}
		again, err := ParseToken(tok.Reveal())
		if err != nil || again != tok {
			t.Fatalf("round trip: %v, %v", again, err)
		}
		for _, out := range []string{tok.String(), fmt.Sprintf("%v|%+v|%#v|%s|%q|%x|%d", tok, tok, tok, tok, tok, tok, tok)} {
			if strings.Contains(out, tok.Secret()) {
				t.Fatalf("%q leaks the secret", out)
			}
		}
	})
}
