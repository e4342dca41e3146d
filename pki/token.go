package pki

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Bootstrap token shape, as in k8s.io/cluster-bootstrap: "<id>.<secret>".
const (
	tokenIDLen     = 6
	tokenSecretLen = 16
	tokenAlphabet  = "abcdefghijklmnopqrstuvwxyz0123456789"
	tokenRedacted  = "****************"
)

// Token is a bootstrap token. Its secret half is a credential, so every way
// a Token is printed by accident — fmt with any verb, slog, JSON, YAML —
// shows only the ID ("abcdef.****************"). Reveal and Secret are the
// only ways to the secret: use them where the token is meant to go (the
// join command a user asked for, the bootstrap token Secret).
type Token struct {
	id, secret string
}

// GenerateToken makes a token from crypto/rand, uniformly over the alphabet.
func GenerateToken() (Token, error) {
	s, err := randomString(rand.Reader, tokenIDLen+tokenSecretLen)
	if err != nil {
		return Token{}, fmt.Errorf("generate bootstrap token: %w", err)
	}
	return Token{id: s[:tokenIDLen], secret: s[tokenIDLen:]}, nil
}

// randomString draws n characters of tokenAlphabet from r, rejecting bytes
// that would bias the draw (256 is not a multiple of 36).
func randomString(r io.Reader, n int) (string, error) {
	const limit = 256 - 256%len(tokenAlphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			}
		}
	}
	return string(out), nil
}

// ParseToken parses "<6 of [a-z0-9]>.<16 of [a-z0-9]>". Errors never quote
// the input, which may be (most of) a secret.
func ParseToken(s string) (Token, error) {
	id, secret, ok := strings.Cut(s, ".")
	switch {
	case s == "":
		return Token{}, errors.New("bootstrap token is empty")
	case !ok:
		return Token{}, errors.New("bootstrap token must look like abcdef.0123456789abcdef: no '.' between ID and secret")
	case len(id) != tokenIDLen || !inAlphabet(id):
		return Token{}, fmt.Errorf("bootstrap token ID (before the '.') must be %d characters of [a-z0-9]", tokenIDLen)
	case len(secret) != tokenSecretLen || !inAlphabet(secret):
		return Token{}, fmt.Errorf("bootstrap token secret (after the '.') must be %d characters of [a-z0-9]", tokenSecretLen)
	}
	return Token{id: id, secret: secret}, nil
}

func inAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(tokenAlphabet, rune(s[i])) {
			return false
		}
	}
	return true
}

// ID is the public half, the name of the token's Secret
// (bootstrap-token-<id>).
func (t Token) ID() string { return t.id }

// Secret is the secret half.
func (t Token) Secret() string { return t.secret }

// Reveal is the whole token, "<id>.<secret>".
func (t Token) Reveal() string {
	if t.IsZero() {
		return ""
	}
	return t.id + "." + t.secret
}

// IsZero reports whether t is the zero Token.
func (t Token) IsZero() bool { return t.id == "" && t.secret == "" }

// String is the redacted token.
func (t Token) String() string {
	if t.IsZero() {
		return ""
	}
	return t.id + "." + tokenRedacted
}

// GoString is the redacted token, for %#v.
func (t Token) GoString() string { return fmt.Sprintf("pki.Token(%q)", t.String()) }

// Format prints the redacted token for every verb, so that neither %v nor
// %+v, %d or %x reach the fields.
func (t Token) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, t.GoString())
		return
	}
	if verb == 'q' {
		fmt.Fprintf(f, "%q", t.String())
		return
	}
	io.WriteString(f, t.String())
}

// LogValue makes slog print the redacted token.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// MarshalText writes the redacted token: JSON and YAML encoders never see
// the secret. Write Reveal() explicitly where the token must be stored.
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses with ParseToken, so token files and flags decode.
func (t *Token) UnmarshalText(b []byte) error {
	v, err := ParseToken(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}
