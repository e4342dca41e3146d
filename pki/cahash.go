package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// caHashPrefix is the only hash kind kubeadm and anvil pin CAs with.
const caHashPrefix = "sha256:"

// CAHash pins a CA by the SHA-256 of its DER SubjectPublicKeyInfo, the value
// kubeadm's --discovery-token-ca-cert-hash carries. Pinning the public key
// rather than the certificate lets a CA be re-signed (new validity) without
// breaking join commands already handed out. The zero CAHash matches
// nothing.
type CAHash struct {
	sum [sha256.Size]byte
	set bool
}

// CAHashOf is cert's pin.
func CAHashOf(cert *x509.Certificate) CAHash {
	return CAHash{sum: sha256.Sum256(cert.RawSubjectPublicKeyInfo), set: true}
}

// CAHashFromFile is the pin of the first certificate in a PEM file
// (/etc/kubernetes/pki/ca.crt).
func CAHashFromFile(certPath string) (CAHash, error) {
	cert, err := ReadCertFile(certPath)
	if err != nil {
		return CAHash{}, err
	}
	return CAHashOf(cert), nil
}

// ParseCAHash parses "sha256:<64 hex digits>" (either case).
func ParseCAHash(s string) (CAHash, error) {
	hexSum, ok := strings.CutPrefix(s, caHashPrefix)
	if !ok {
		return CAHash{}, fmt.Errorf("CA hash %s must look like sha256:<64 hex digits>", quoteShort(s))
	}
	if len(hexSum) != 2*sha256.Size {
		return CAHash{}, fmt.Errorf("CA hash %s must have 64 hex digits after sha256:, not %d", quoteShort(s), len(hexSum))
	}
	var h CAHash
	if _, err := hex.Decode(h.sum[:], []byte(hexSum)); err != nil {
		return CAHash{}, fmt.Errorf("CA hash %s: not hexadecimal", quoteShort(s))
	}
	h.set = true
	return h, nil
}

// String is "sha256:<hex>", or "" for the zero CAHash.
func (h CAHash) String() string {
	if !h.set {
		return ""
	}
	return caHashPrefix + hex.EncodeToString(h.sum[:])
}

// IsZero reports whether h was never set.
func (h CAHash) IsZero() bool { return !h.set }

// Matches reports, in constant time, whether cert's public key is the one
// h pins.
func (h CAHash) Matches(cert *x509.Certificate) bool {
	if !h.set || cert == nil {
		return false
	}
	got := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return subtle.ConstantTimeCompare(got[:], h.sum[:]) == 1
}

// MarshalText writes String, so a CAHash reads naturally in JSON and YAML.
func (h CAHash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText parses with ParseCAHash.
func (h *CAHash) UnmarshalText(b []byte) error {
	v, err := ParseCAHash(string(b))
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// quoteShort quotes s for an error message, cut so that a pasted file does
// not flood the terminal.
func quoteShort(s string) string {
	const limit = 80
	if len(s) > limit {
		return fmt.Sprintf("%q…", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
