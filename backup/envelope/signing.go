package envelope

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// Signing: from format 2 every backup is signed by the cluster's backup
// signing key (an ed25519 key every master holds, pki's
// backup-signing.key). The header names the public key; after the
// payload's end marker come SignatureSize bytes, the ed25519 signature of
// SignatureMessage(sha256 of every byte before them). A reader checks the
// header's key against the keys it trusts before anything else, and the
// signature over the whole file before it decrypts or decompresses a byte
// of the body: the body is never parsed unless the file was written by a
// holder of a trusted key.

// SignatureSize is the length of the signature at the end of a backup.
const SignatureSize = ed25519.SignatureSize

// SigningKeyPrefix starts the text form of a backup signing public key.
const SigningKeyPrefix = "ed25519:"

// signatureContext separates a backup signature from anything else the key
// could be made to sign.
const signatureContext = "anvil backup envelope signature v2\x00"

// Sentinel errors of signature checks; each comes as an *EnvelopeError with
// Part "signature".
var (
	// ErrUnsigned: a format-1 backup, written before anvil signed backups,
	// and the reader did not allow unsigned ones.
	ErrUnsigned = errors.New("backup is not signed")
	// ErrUntrusted: the backup is signed, but not by a key the reader
	// trusts, or its signature does not verify.
	ErrUntrusted = errors.New("backup is not signed by this cluster")
	// ErrNoTrust: the reader was given no key to check signatures with.
	ErrNoTrust = errors.New("no backup signing key to check the backup against")
)

// FormatSigningKey is the text form of a signing public key: "ed25519:"
// and the key in standard base64.
func FormatSigningKey(pub ed25519.PublicKey) string {
	return SigningKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParseSigningKey parses FormatSigningKey's form.
func ParseSigningKey(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(s, SigningKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("backup signing key %q does not start with %q", s, SigningKeyPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("backup signing key %q is not %s and %d bytes in base64", s, SigningKeyPrefix, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// Trust says whose backups a reader accepts.
type Trust struct {
	// Keys are the signing keys accepted: the cluster's (pinned in the
	// cluster file's backup.signingPublicKey, held by its masters).
	Keys []ed25519.PublicKey
	// AllowUnsigned accepts format-1 backups, which anvil wrote before it
	// signed them. Anyone can write such a file: allow it only for a
	// backup whose origin you know.
	AllowUnsigned bool
}

// TrustKeys is a Trust of the keys in their text form.
func TrustKeys(keys ...string) (Trust, error) {
	var t Trust
	for _, k := range keys {
		pub, err := ParseSigningKey(k)
		if err != nil {
			return Trust{}, err
		}
		t.Keys = append(t.Keys, pub)
	}
	return t, nil
}

func (t Trust) String() string {
	var ks []string
	for _, k := range t.Keys {
		ks = append(ks, FormatSigningKey(k))
	}
	return strings.Join(ks, ", ")
}

// checkHeader refuses, from the header alone, a backup that cannot pass:
// unsigned when that is not allowed, or signed by a key not trusted.
func (t Trust) checkHeader(h *BackupHeader, format uint16) error {
	if format < 2 {
		if !t.AllowUnsigned {
			return NewError(ErrUnsigned, "signature", "format %d backups are not signed (written by an older anvil): "+
				"anyone can write one; restore it only if you know where it comes from, with --allow-unsigned", format)
		}
		return nil
	}
	if len(t.Keys) == 0 {
		return NewError(ErrNoTrust, "signature", "the backup is signed by %s; give the cluster's key (backup.signingPublicKey in the cluster file, "+
			"or --signing-key) to check it", h.SigningKey)
	}
	pub, err := ParseSigningKey(h.SigningKey)
	if err != nil {
		return NewError(ErrCorruptBackup, "header", "%v", err)
	}
	for _, k := range t.Keys {
		if k.Equal(pub) {
			return nil
		}
	}
	return NewError(ErrUntrusted, "signature", "it is signed by %s, and this cluster's backups are signed by %s: "+
		"it is another cluster's backup, or forged", h.SigningKey, t)
}

// SignatureMessage is what the key signs: a context string and the sha256
// of the file up to the signature.
func SignatureMessage(digest []byte) []byte {
	return append([]byte(signatureContext), digest...)
}

// signingWriter hashes what goes through it, so Close can sign it.
type signingWriter struct {
	w io.Writer
	h hash.Hash
}

func (s *signingWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.h.Write(p[:n])
	return n, err
}

// sign writes the signature of everything written so far.
func (s *signingWriter) sign(key ed25519.PrivateKey) error {
	_, err := s.w.Write(ed25519.Sign(key, SignatureMessage(s.h.Sum(nil))))
	return err
}

// tailHash hashes everything written to it except the last n bytes, which
// it keeps: a signature or a checksum at the end of a stream, and the hash
// of what it covers.
type tailHash struct {
	h     hash.Hash
	n     int
	tail  []byte
	total int64
}

func newTailHash(n int) *tailHash { return &tailHash{h: sha256.New(), n: n} }

func (t *tailHash) Write(p []byte) (int, error) {
	t.total += int64(len(p))
	if len(p) >= t.n {
		t.h.Write(t.tail)
		t.h.Write(p[:len(p)-t.n])
		t.tail = append(t.tail[:0], p[len(p)-t.n:]...)
		return len(p), nil
	}
	buf := append(t.tail, p...)
	if len(buf) > t.n {
		t.h.Write(buf[:len(buf)-t.n])
		buf = buf[len(buf)-t.n:]
	}
	t.tail = append(make([]byte, 0, t.n), buf...)
	return len(p), nil
}

// authenticate reads the whole backup in r without opening its body: the
// clear header (checked against trust, then by check, before anything
// else), the payload's framing, and the signature at the end against the
// header's key. It returns the header and format.
func authenticate(r io.Reader, trust Trust, check func(*BackupHeader) error) (*BackupHeader, uint16, error) {
	th := newTailHash(SignatureSize)
	br := newBufReader(io.TeeReader(r, th))
	h, _, format, err := readHeader(br)
	if err != nil {
		return nil, 0, err
	}
	if err := trust.checkHeader(h, format); err != nil {
		return nil, 0, err
	}
	if check != nil {
		if err := check(h); err != nil {
			return nil, 0, err
		}
	}
	chunks := newChunkReader(br, format)
	if _, err := io.Copy(io.Discard, chunks); err != nil {
		return nil, 0, err
	}
	if format < 2 {
		return h, format, nil
	}
	pub, _ := ParseSigningKey(h.SigningKey)
	if !ed25519.Verify(pub, SignatureMessage(th.h.Sum(nil)), th.tail) {
		return nil, 0, NewError(ErrUntrusted, "signature", "the signature by %s does not verify: the file was changed after it was signed, or forged", h.SigningKey)
	}
	return h, format, nil
}
