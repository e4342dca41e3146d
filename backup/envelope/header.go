package envelope

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"net/url"
	"regexp"
	"strings"
	"time"

	"filippo.io/age"
)

// The clear header: its fields and their checks, its one canonical encoding,
// and its framing at the start of the file (magic, version, length, CRC).

// BackupTrigger says who took a backup.
type BackupTrigger string

const (
	// TriggerManual is `anvil backup` run by a person or a script.
	TriggerManual BackupTrigger = "manual"
	// TriggerScheduled is the backup timer (backup.schedule); only these
	// count against backup.retain.
	TriggerScheduled BackupTrigger = "scheduled"
)

// BackupHeader is the clear-text metadata at the start of a backup.
type BackupHeader struct {
	// Cluster is the cluster file's name; restore refuses another's.
	Cluster           string `json:"cluster"`
	KubernetesVersion string `json:"kubernetesVersion"`
	// EtcdVersion is the member's server version; EtcdStorageVersion the
	// snapshot's storage version as etcd reported it (empty before 3.6).
	EtcdVersion        string `json:"etcdVersion"`
	EtcdStorageVersion string `json:"etcdStorageVersion,omitempty"`
	// Revision is etcd's revision when the snapshot stream began; the
	// snapshot holds everything up to it.
	Revision int64          `json:"revision"`
	Members  []BackupMember `json:"members"`
	// Node is the master the backup was taken on.
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
	// AnvilVersion is the anvil that wrote the backup.
	AnvilVersion string        `json:"anvilVersion"`
	Trigger      BackupTrigger `json:"trigger"`
	// CACertHash is the cluster CA's public-key pin (sha256:…), the same
	// `anvil certs ca-hash` prints: a restore compares it with the master's
	// before decrypting anything.
	CACertHash  string `json:"caCertHash"`
	Compression string `json:"compression"`
	Encrypted   bool   `json:"encrypted"`
	// Recipients are the age public keys the payload is encrypted to.
	Recipients []string `json:"recipients,omitempty"`
	// SigningKey is the public key (FormatSigningKey) whose signature ends
	// the file; format 2 on, where it is required.
	SigningKey string `json:"signingKey,omitempty"`
}

// BackupMember is one etcd member when the backup was taken.
type BackupMember struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	Learner    bool     `json:"learner,omitempty"`
}

// clusterNameRE is what the header accepts as a cluster or node name: the
// cluster file's names are DNS labels or subdomains.
var clusterNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)

// Validate checks a header field by field; the reader and the writer both
// apply it, so anvil never writes a header it would refuse.
func (h *BackupHeader) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("header field %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !clusterNameRE.MatchString(h.Cluster) {
		bad("cluster", "%q is not a cluster name", h.Cluster)
	}
	if !printable(h.KubernetesVersion, 64) || !strings.HasPrefix(h.KubernetesVersion, "v") {
		bad("kubernetesVersion", "%q is not a version like v1.37.2", h.KubernetesVersion)
	}
	if !printable(h.EtcdVersion, 64) {
		bad("etcdVersion", "%q is not a version", h.EtcdVersion)
	}
	if h.EtcdStorageVersion != "" && !printable(h.EtcdStorageVersion, 64) {
		bad("etcdStorageVersion", "%q is not a version", h.EtcdStorageVersion)
	}
	if h.Revision < 1 {
		bad("revision", "%d is not a revision", h.Revision)
	}
	if len(h.Members) == 0 || len(h.Members) > 64 {
		bad("members", "%d members (1 to 64)", len(h.Members))
	}
	for i, m := range h.Members {
		f := fmt.Sprintf("members[%d]", i)
		if !printable(m.Name, 253) {
			bad(f+".name", "%q is not a member name", m.Name)
		}
		if len(m.ID) != 16 || !isLowerHex(m.ID) {
			bad(f+".id", "%q is not 16 lowercase hex digits", m.ID)
		}
		if len(m.PeerURLs) == 0 {
			bad(f+".peerURLs", "empty")
		}
		for j, u := range append(append([]string{}, m.PeerURLs...), m.ClientURLs...) {
			if !validURL(u) {
				bad(fmt.Sprintf("%s.urls[%d]", f, j), "%q is not an http(s) URL", u)
			}
		}
	}
	if !clusterNameRE.MatchString(h.Node) {
		bad("node", "%q is not a node name", h.Node)
	}
	if h.Created.IsZero() || h.Created.Location() != time.UTC {
		bad("created", "%v is not a UTC time", h.Created)
	}
	if !printable(h.AnvilVersion, 128) {
		bad("anvilVersion", "%q is not a version", h.AnvilVersion)
	}
	if h.Trigger != TriggerManual && h.Trigger != TriggerScheduled {
		bad("trigger", "%q: want %q or %q", h.Trigger, TriggerManual, TriggerScheduled)
	}
	if len(h.CACertHash) != len("sha256:")+64 || !strings.HasPrefix(h.CACertHash, "sha256:") || !isLowerHex(h.CACertHash[len("sha256:"):]) {
		bad("caCertHash", "%q is not sha256:<64 hex digits>", h.CACertHash)
	}
	if h.Compression != CompressionZstd {
		bad("compression", "%q: only %q", h.Compression, CompressionZstd)
	}
	if h.Encrypted != (len(h.Recipients) > 0) {
		bad("encrypted", "%v with %d recipients", h.Encrypted, len(h.Recipients))
	}
	if len(h.Recipients) > 64 {
		bad("recipients", "%d recipients (at most 64)", len(h.Recipients))
	}
	for i, r := range h.Recipients {
		if _, err := age.ParseX25519Recipient(r); err != nil {
			bad(fmt.Sprintf("recipients[%d]", i), "%q is not an age X25519 recipient", r)
		}
	}
	if h.SigningKey != "" {
		if _, err := ParseSigningKey(h.SigningKey); err != nil {
			bad("signingKey", "%v", err)
		}
	}
	return errors.Join(errs...)
}

func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}

func validURL(s string) bool {
	if !printable(s, 512) {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// validBackupPath accepts a relative, clean path of printable ASCII without
// "." or ".." elements: the host path of a file, without its leading slash.
func validBackupPath(p string) bool {
	if !printable(p, maxPathLen) || !fs.ValidPath(p) || p == "." {
		return false
	}
	return !strings.ContainsAny(p, `\*?[]`)
}

// encodeHeader is the canonical encoding of h.
func encodeHeader(h *BackupHeader) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxHeaderSize {
		return nil, fmt.Errorf("header is %d bytes, more than %d", len(b), MaxHeaderSize)
	}
	return b, nil
}

// decodeHeader parses b strictly: known fields only, valid values, and b
// must be exactly the canonical encoding of what it decodes to.
func decodeHeader(b []byte) (*BackupHeader, error) {
	var h BackupHeader
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("header JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("header JSON: data after the object")
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	canon, err := json.Marshal(&h)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, errors.New("header JSON is not in canonical form")
	}
	return &h, nil
}

// writeHeader writes the clear header hb in its framing: magic, version,
// length, hb, and the CRC-32C of all of them.
func writeHeader(w io.Writer, hb []byte, format uint16) error {
	var prefix [envelopePrefix]byte
	copy(prefix[:], envelopeMagic)
	binary.BigEndian.PutUint16(prefix[8:], format)
	binary.BigEndian.PutUint32(prefix[10:], uint32(len(hb)))
	clear := append(append(prefix[:], hb...), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(clear[len(clear)-4:], crc32.Checksum(clear[:len(clear)-4], crcTable()))
	_, err := w.Write(clear)
	return err
}

// ReadBackupHeader reads and checks the clear header at the start of r, and
// leaves r positioned at the payload. It needs no key.
func ReadBackupHeader(r io.Reader) (*BackupHeader, error) {
	h, _, _, err := readHeader(r)
	return h, err
}

// readHeader returns the header, its encoding and the file's format.
func readHeader(r io.Reader) (*BackupHeader, []byte, uint16, error) {
	var prefix [envelopePrefix]byte
	n, err := io.ReadFull(r, prefix[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, nil, 0, err
	}
	if n < len(envelopeMagic) || string(prefix[:len(envelopeMagic)]) != envelopeMagic {
		if n < len(envelopeMagic) && string(prefix[:n]) == envelopeMagic[:n] && n > 0 {
			return nil, nil, 0, NewError(ErrTruncatedBackup, "header", "the file ends after %d bytes", n)
		}
		return nil, nil, 0, NewError(ErrNotBackup, "header", "it does not start with %q", envelopeMagic)
	}
	if n < envelopePrefix {
		return nil, nil, 0, NewError(ErrTruncatedBackup, "header", "the file ends after %d bytes", n)
	}
	format := binary.BigEndian.Uint16(prefix[8:])
	if format < minEnvelopeFormat || format > EnvelopeFormat {
		return nil, nil, 0, NewError(ErrUnsupportedFormat, "header", "format version %d; this anvil reads versions %d to %d (the backup is from a newer anvil, or corrupt)", format, minEnvelopeFormat, EnvelopeFormat)
	}
	size := binary.BigEndian.Uint32(prefix[10:])
	if size < 2 || size > MaxHeaderSize {
		return nil, nil, 0, NewError(ErrCorruptBackup, "header", "header length %d is outside 2..%d", size, MaxHeaderSize)
	}
	rest := make([]byte, size+4)
	if _, err := io.ReadFull(r, rest); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, 0, NewError(ErrTruncatedBackup, "header", "the file ends inside the %d-byte header", size)
		}
		return nil, nil, 0, err
	}
	hb := rest[:size]
	crc := crc32.New(crcTable())
	crc.Write(prefix[:])
	crc.Write(hb)
	if got, want := crc.Sum32(), binary.BigEndian.Uint32(rest[size:]); got != want {
		return nil, nil, 0, NewError(ErrCorruptBackup, "header", "CRC-32C is %08x, the header says %08x", got, want)
	}
	h, err := decodeHeader(hb)
	if err != nil {
		return nil, nil, 0, NewError(ErrCorruptBackup, "header", "%v", err)
	}
	if signed := h.SigningKey != ""; signed != (format >= 2) {
		return nil, nil, 0, NewError(ErrCorruptBackup, "header", "format %d with signingKey %q: format 2 backups name their signing key, format 1 ones have none", format, h.SigningKey)
	}
	return h, hb, format, nil
}
