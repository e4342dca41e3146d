package envelope

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"net/url"
	"regexp"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// A backup is one file, the envelope, that streams in one pass both ways:
//
//	offset  size  field
//	0       8     magic "ANVILBAK"
//	8       2     format version, big-endian (EnvelopeFormat)
//	10      4     header length N, big-endian, 2..MaxHeaderSize
//	14      N     header: BackupHeader as canonical JSON (exactly what
//	              encoding/json produces for it, so it has one encoding)
//	14+N    4     CRC-32C of bytes 0..14+N
//	18+N    …     payload: the body, encrypted as an age file to
//	              header.recipients when header.encrypted, cut into chunks:
//	                { u32 n (1..MaxPayloadChunk), u32 CRC-32C of the n bytes,
//	                  n bytes }*
//	                u32 0, u64 total payload bytes, then the end of the file
//	body = one zstd stream of the content:
//	  'H' u32 N, N bytes   the header again, byte for byte: under age this
//	                       authenticates the clear header above
//	  'F' u16 P, path, u32 mode, u32 size, data     (0..MaxBackupFiles,
//	                       paths strictly increasing, mode 0600 or 0644)
//	  'S' { u32 n (1..MaxSnapshotChunk), n bytes }* u32 0
//	                       the etcd snapshot exactly as etcd's maintenance
//	                       API streamed it (etcd's own sha256 trailer included)
//	  'Z' u64 size, [32] sha256, u32 files    the seal: the snapshot's size
//	                       and sha256, and how many files came before it
//	  end of content, then end of the zstd stream, then end of the age file.
//
// The header is in clear text so that `anvil backup list|inspect` and
// restore's refusals (another cluster, a version anvil cannot run) work
// without the key; it holds no secret. The snapshot's sha256 is in the seal
// at the end, not in the header, because the header is written before the
// snapshot streams. The layers each catch one kind of damage and say so:
// the payload's chunk CRCs and its end marker tell a flipped bit from a
// truncated file whether or not it is encrypted; age authenticates the body
// (nobody without the key changed it, the clear header included); zstd
// checks its frame checksum; the seal checks the snapshot's size and sha256.
// A reader treats nothing as valid until the seal and the end of every
// layer have been checked.

// EnvelopeFormat is the envelope version this anvil writes and reads.
const EnvelopeFormat = 1

// Limits of the envelope; a reader refuses anything beyond them.
const (
	MaxHeaderSize    = 64 << 10
	MaxBackupFiles   = 64
	MaxBackupFile    = 1 << 20
	MaxSnapshotChunk = 4 << 20
	MaxPayloadChunk  = 4 << 20
	maxPathLen       = 255
)

const (
	envelopeMagic    = "ANVILBAK"
	envelopePrefix   = 14 // magic, version, header length
	recHeader        = 'H'
	recFile          = 'F'
	recSnapshot      = 'S'
	recSeal          = 'Z'
	ageMagic         = "age-encryption.org/v1\n"
	zstdMagic        = "\x28\xb5\x2f\xfd"
	CompressionZstd  = "zstd"
	zstdWindow       = 4 << 20
	snapshotBufBytes = 256 << 10
	payloadChunk     = 1 << 20
	// chunkHeader is a chunk's length and CRC-32C, in front of it.
	chunkHeader = 8
)

// crcTable is CRC-32C, as iSCSI and ext4 use; computed once per call site
// because a package-level table would be mutable state.
func crcTable() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

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
}

// BackupMember is one etcd member when the backup was taken.
type BackupMember struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	Learner    bool     `json:"learner,omitempty"`
}

// Sentinel errors of the envelope; every *EnvelopeError wraps one of them.
var (
	ErrNotBackup          = errors.New("not an anvil backup")
	ErrUnsupportedFormat  = errors.New("unsupported backup format")
	ErrCorruptBackup      = errors.New("backup is corrupt")
	ErrTruncatedBackup    = errors.New("backup is truncated")
	ErrEncryptedBackup    = errors.New("backup is encrypted and no identity was given")
	ErrWrongIdentity      = errors.New("no given identity can decrypt the backup")
	errSnapshotIncomplete = errors.New("the snapshot stream ended early")
)

// EnvelopeError says what is wrong with a backup and where.
type EnvelopeError struct {
	// Err is one of ErrNotBackup, ErrUnsupportedFormat, ErrCorruptBackup,
	// ErrTruncatedBackup, ErrEncryptedBackup, ErrWrongIdentity.
	Err error
	// Part is where the problem is: "header", "payload", "header copy",
	// "file", "snapshot", "seal", "end".
	Part   string
	Detail string
}

func (e *EnvelopeError) Error() string {
	return fmt.Sprintf("%v (%s): %s", e.Err, e.Part, e.Detail)
}

func (e *EnvelopeError) Unwrap() error { return e.Err }

func NewError(kind error, part, format string, args ...any) *EnvelopeError {
	return &EnvelopeError{Err: kind, Part: part, Detail: fmt.Sprintf(format, args...)}
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

// EnvelopeWriter writes a backup envelope in one pass: the header when it is
// made, then files, then the snapshot, then the seal on Close.
type EnvelopeWriter struct {
	out      io.Writer
	chunks   *chunkWriter
	crypt    io.WriteCloser // nil when not encrypted
	zw       *zstd.Encoder
	rec      *bufio.Writer // into zw
	lastPath string
	files    uint32
	state    int // 0 files, 1 snapshot written, 2 closed
	size     int64
	sum      [sha256.Size]byte
}

// NewEnvelopeWriter writes h's envelope header to w and prepares the body.
// recipients are age X25519 public keys; with none the backup is not
// encrypted. h.Encrypted, h.Recipients and h.Compression are set here.
func NewEnvelopeWriter(w io.Writer, h BackupHeader, recipients []string) (*EnvelopeWriter, error) {
	var ars []age.Recipient
	h.Recipients = nil
	for _, s := range recipients {
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("backup recipient %q: %w", s, err)
		}
		ars = append(ars, r)
		h.Recipients = append(h.Recipients, r.String())
	}
	h.Encrypted = len(ars) > 0
	h.Compression = CompressionZstd
	hb, err := encodeHeader(&h)
	if err != nil {
		return nil, err
	}
	e := &EnvelopeWriter{out: w}
	var prefix [envelopePrefix]byte
	copy(prefix[:], envelopeMagic)
	binary.BigEndian.PutUint16(prefix[8:], EnvelopeFormat)
	binary.BigEndian.PutUint32(prefix[10:], uint32(len(hb)))
	clear := append(append(prefix[:], hb...), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(clear[len(clear)-4:], crc32.Checksum(clear[:len(clear)-4], crcTable()))
	if _, err := w.Write(clear); err != nil {
		return nil, err
	}
	e.chunks = &chunkWriter{w: e.out, buf: make([]byte, chunkHeader, chunkHeader+payloadChunk), table: crcTable()}
	var body io.Writer = e.chunks
	if h.Encrypted {
		if e.crypt, err = age.Encrypt(e.chunks, ars...); err != nil {
			return nil, fmt.Errorf("encrypt backup: %w", err)
		}
		body = e.crypt
	}
	e.zw, err = zstd.NewWriter(body,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithWindowSize(zstdWindow),
		zstd.WithEncoderCRC(true),
		zstd.WithEncoderConcurrency(2))
	if err != nil {
		return nil, err
	}
	e.rec = bufio.NewWriterSize(e.zw, 64<<10)
	e.rec.WriteByte(recHeader)
	putU32(e.rec, uint32(len(hb)))
	e.rec.Write(hb)
	return e, nil
}

// AddFile adds one file (a host path without its leading slash) before the
// snapshot; paths must come in increasing order.
func (e *EnvelopeWriter) AddFile(path string, mode fs.FileMode, data []byte) error {
	switch {
	case e.state != 0:
		return errors.New("backup envelope: files must come before the snapshot")
	case !validBackupPath(path):
		return fmt.Errorf("backup envelope: %q is not a relative clean path", path)
	case path <= e.lastPath:
		return fmt.Errorf("backup envelope: file %s after %s: paths must increase", path, e.lastPath)
	case mode != 0o600 && mode != 0o644:
		return fmt.Errorf("backup envelope: file %s: mode %v is neither 0600 nor 0644", path, mode)
	case len(data) > MaxBackupFile:
		return fmt.Errorf("backup envelope: file %s is %d bytes, more than %d", path, len(data), MaxBackupFile)
	case e.files >= MaxBackupFiles:
		return fmt.Errorf("backup envelope: more than %d files", MaxBackupFiles)
	}
	e.rec.WriteByte(recFile)
	putU16(e.rec, uint16(len(path)))
	e.rec.WriteString(path)
	putU32(e.rec, uint32(mode))
	putU32(e.rec, uint32(len(data)))
	_, err := e.rec.Write(data)
	e.lastPath = path
	e.files++
	return err
}

// WriteSnapshot streams the etcd snapshot from r into the body, hashing it
// as it goes; it returns the snapshot's size.
func (e *EnvelopeWriter) WriteSnapshot(r io.Reader) (int64, error) {
	if e.state != 0 {
		return 0, errors.New("backup envelope: the snapshot was already written")
	}
	e.state = 1
	if err := e.rec.WriteByte(recSnapshot); err != nil {
		return 0, err
	}
	h := sha256.New()
	buf := make([]byte, snapshotBufBytes)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			h.Write(buf[:n])
			putU32(e.rec, uint32(n))
			if _, err := e.rec.Write(buf[:n]); err != nil {
				return e.size, err
			}
			e.size += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return e.size, fmt.Errorf("read etcd snapshot: %w", rerr)
		}
	}
	putU32(e.rec, 0)
	copy(e.sum[:], h.Sum(nil))
	return e.size, nil
}

// Close writes the seal and ends every layer. The backup is complete only
// when Close returns nil.
func (e *EnvelopeWriter) Close() error {
	if e.state == 2 {
		return nil
	}
	if e.state != 1 {
		return errors.New("backup envelope: closed before the snapshot was written")
	}
	e.state = 2
	e.rec.WriteByte(recSeal)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(e.size))
	e.rec.Write(n[:])
	e.rec.Write(e.sum[:])
	putU32(e.rec, e.files)
	if err := e.rec.Flush(); err != nil {
		return err
	}
	if err := e.zw.Close(); err != nil {
		return fmt.Errorf("compress backup: %w", err)
	}
	if e.crypt != nil {
		if err := e.crypt.Close(); err != nil {
			return fmt.Errorf("encrypt backup: %w", err)
		}
	}
	return e.chunks.Close()
}

// chunkWriter cuts the payload into chunks, each with its CRC-32C, and ends
// it with a zero length and the total.
type chunkWriter struct {
	w io.Writer
	// buf is room for the chunk's header, then its payload so far.
	buf   []byte
	total uint64
	table *crc32.Table
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := copy(c.buf[len(c.buf):cap(c.buf)], p)
		c.buf = c.buf[:len(c.buf)+k]
		p, n = p[k:], n+k
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == chunkHeader {
		return nil
	}
	// The chunk's header goes in front of its payload, so that one write
	// carries both.
	payload := c.buf[chunkHeader:]
	binary.BigEndian.PutUint32(c.buf[:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(c.buf[4:chunkHeader], crc32.Checksum(payload, c.table))
	if _, err := c.w.Write(c.buf); err != nil {
		return err
	}
	c.total += uint64(len(payload))
	c.buf = c.buf[:chunkHeader]
	return nil
}

func (c *chunkWriter) Close() error {
	if err := c.flush(); err != nil {
		return err
	}
	var end [12]byte
	binary.BigEndian.PutUint64(end[4:], c.total)
	_, err := c.w.Write(end[:])
	return err
}

// chunkReader reads the payload's chunks, checking each CRC, and reports
// a damaged or truncated payload as such; its error is kept, because the
// layers above (age, zstd) may not pass it on intact.
type chunkReader struct {
	r      *bufio.Reader
	buf    []byte
	off    int
	total  uint64
	chunks int
	ended  bool
	err    error
	table  *crc32.Table
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.err != nil {
			return 0, c.err
		}
		if c.ended {
			return 0, io.EOF
		}
		c.err = c.next()
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

func (c *chunkReader) next() error {
	short := func(err error, where string) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return NewError(ErrTruncatedBackup, "payload", "the file ends %s, %d bytes into the payload (chunk %d)", where, c.total, c.chunks+1)
		}
		return err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return short(err, "before the payload's end marker")
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		var tot [8]byte
		if _, err := io.ReadFull(c.r, tot[:]); err != nil {
			return short(err, "inside the payload's end marker")
		}
		if got := binary.BigEndian.Uint64(tot[:]); got != c.total {
			return NewError(ErrCorruptBackup, "payload", "the end marker counts %d payload bytes, the chunks hold %d", got, c.total)
		}
		if _, err := c.r.ReadByte(); err == nil {
			return NewError(ErrCorruptBackup, "end", "data after the end of the payload")
		} else if !errors.Is(err, io.EOF) {
			return err
		}
		c.ended = true
		c.buf, c.off = c.buf[:0], 0
		return nil
	}
	if n > MaxPayloadChunk {
		return NewError(ErrCorruptBackup, "payload", "chunk %d at payload byte %d claims %d bytes, more than %d", c.chunks+1, c.total, n, MaxPayloadChunk)
	}
	var sum [4]byte
	if _, err := io.ReadFull(c.r, sum[:]); err != nil {
		return short(err, "inside a chunk header")
	}
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	c.buf, c.off = c.buf[:n], 0
	if _, err := io.ReadFull(c.r, c.buf); err != nil {
		c.buf = c.buf[:0]
		return short(err, "inside a chunk")
	}
	if got, want := crc32.Checksum(c.buf, c.table), binary.BigEndian.Uint32(sum[:]); got != want {
		c.buf = c.buf[:0]
		return NewError(ErrCorruptBackup, "payload", "chunk %d (payload bytes %d to %d) fails its CRC-32C: %08x, recorded %08x", c.chunks+1, c.total, c.total+uint64(n), got, want)
	}
	c.total += uint64(n)
	c.chunks++
	return nil
}

// SnapshotSHA256 is the snapshot's sha256, known once it was written.
func (e *EnvelopeWriter) SnapshotSHA256() [sha256.Size]byte { return e.sum }

func putU16(w *bufio.Writer, v uint16) {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	w.Write(b[:])
}

func putU32(w *bufio.Writer, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	w.Write(b[:])
}

// ReadBackupHeader reads and checks the clear header at the start of r, and
// leaves r positioned at the payload. It needs no key.
func ReadBackupHeader(r io.Reader) (*BackupHeader, error) {
	h, _, err := readHeader(r)
	return h, err
}

func readHeader(r io.Reader) (*BackupHeader, []byte, error) {
	var prefix [envelopePrefix]byte
	n, err := io.ReadFull(r, prefix[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	if n < len(envelopeMagic) || string(prefix[:len(envelopeMagic)]) != envelopeMagic {
		if n < len(envelopeMagic) && string(prefix[:n]) == envelopeMagic[:n] && n > 0 {
			return nil, nil, NewError(ErrTruncatedBackup, "header", "the file ends after %d bytes", n)
		}
		return nil, nil, NewError(ErrNotBackup, "header", "it does not start with %q", envelopeMagic)
	}
	if n < envelopePrefix {
		return nil, nil, NewError(ErrTruncatedBackup, "header", "the file ends after %d bytes", n)
	}
	if v := binary.BigEndian.Uint16(prefix[8:]); v != EnvelopeFormat {
		return nil, nil, NewError(ErrUnsupportedFormat, "header", "format version %d; this anvil reads version %d (the backup is from a newer anvil, or corrupt)", v, EnvelopeFormat)
	}
	size := binary.BigEndian.Uint32(prefix[10:])
	if size < 2 || size > MaxHeaderSize {
		return nil, nil, NewError(ErrCorruptBackup, "header", "header length %d is outside 2..%d", size, MaxHeaderSize)
	}
	rest := make([]byte, size+4)
	if _, err := io.ReadFull(r, rest); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, NewError(ErrTruncatedBackup, "header", "the file ends inside the %d-byte header", size)
		}
		return nil, nil, err
	}
	hb := rest[:size]
	crc := crc32.New(crcTable())
	crc.Write(prefix[:])
	crc.Write(hb)
	if got, want := crc.Sum32(), binary.BigEndian.Uint32(rest[size:]); got != want {
		return nil, nil, NewError(ErrCorruptBackup, "header", "CRC-32C is %08x, the header says %08x", got, want)
	}
	h, err := decodeHeader(hb)
	if err != nil {
		return nil, nil, NewError(ErrCorruptBackup, "header", "%v", err)
	}
	return h, hb, nil
}

// ReadOptions say what to do with a backup's content as it streams by.
// Nothing a callback receives is verified until ReadEnvelope returns nil.
type ReadOptions struct {
	// Identities decrypt an encrypted backup.
	Identities []age.Identity
	// CheckHeader runs on the clear header before anything is decrypted;
	// its error ends the read and is returned as is.
	CheckHeader func(*BackupHeader) error
	// File receives each file (a host path without its leading slash).
	File func(path string, mode fs.FileMode, data []byte) error
	// Snapshot receives the etcd snapshot; nil discards it.
	Snapshot io.Writer
}

// BackupFile is one file in a backup.
type BackupFile struct {
	Path   string      `json:"path"`
	Mode   fs.FileMode `json:"mode"`
	Size   int         `json:"size"`
	SHA256 string      `json:"sha256"`
}

// EnvelopeContents is what a complete, verified read found.
type EnvelopeContents struct {
	Header         BackupHeader `json:"header"`
	Files          []BackupFile `json:"files"`
	SnapshotSize   int64        `json:"snapshotSize"`
	SnapshotSHA256 string       `json:"snapshotSHA256"`
}

// sinkError marks an error of the caller's writer or callback, so it is
// not mistaken for a problem of the backup.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

type sinkWriter struct{ w io.Writer }

func (s sinkWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = &sinkError{err}
	}
	return n, err
}

// ReadEnvelope reads a whole backup from r, checking every layer, and hands
// its content to o's callbacks. Problems with the backup are returned as
// *EnvelopeError; errors of the callbacks are returned as they are.
func ReadEnvelope(r io.Reader, o ReadOptions) (*EnvelopeContents, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	h, hb, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	if o.CheckHeader != nil {
		if err := o.CheckHeader(h); err != nil {
			return nil, err
		}
	}
	return readPayload(br, h, hb, o)
}

// Verification is what VerifyBackup checked.
type Verification struct {
	Header BackupHeader `json:"header"`
	// Contents is what the backup holds, when every layer was checked (it
	// is not encrypted, or an identity opened it); nil when only the clear
	// header and the payload's framing could be.
	Contents *EnvelopeContents `json:"contents,omitempty"`
}

// VerifyBackup reads a whole backup from r and checks every layer it can:
// all of them, etcd's own sha256 trailer of the snapshot included, when
// the backup is not encrypted or ids open it; otherwise the clear header
// and the payload's framing (every chunk's CRC-32C, the end marker and its
// total), so that a damaged or truncated copy is caught without the key.
// Problems with the backup are *EnvelopeError.
func VerifyBackup(r io.Reader, ids []age.Identity) (*Verification, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	h, hb, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	if h.Encrypted && len(ids) == 0 {
		chunks := &chunkReader{r: br, table: crcTable()}
		magic := make([]byte, len(ageMagic))
		if _, err := io.ReadFull(chunks, magic); err != nil {
			if chunks.err != nil {
				return nil, chunks.err
			}
			return nil, NewError(ErrCorruptBackup, "payload", "it ends before the age header")
		}
		if string(magic) != ageMagic {
			return nil, NewError(ErrCorruptBackup, "payload", "the header says encrypted but the payload is not an age file")
		}
		if _, err := io.Copy(io.Discard, chunks); err != nil {
			return nil, err
		}
		return &Verification{Header: *h}, nil
	}
	trailer := NewSnapshotTrailer()
	c, err := readPayload(br, h, hb, ReadOptions{Identities: ids, Snapshot: trailer})
	if err != nil {
		return nil, err
	}
	if err := trailer.Check(); err != nil {
		return nil, NewError(ErrCorruptBackup, "snapshot", "%v", err)
	}
	return &Verification{Header: c.Header, Contents: c}, nil
}

// readPayload reads what follows the clear header.
func readPayload(br *bufio.Reader, h *BackupHeader, hb []byte, o ReadOptions) (*EnvelopeContents, error) {
	chunks := &chunkReader{r: br, table: crcTable()}
	body, err := openPayload(chunks, h, o.Identities)
	if err != nil {
		return nil, err
	}
	zr, err := zstd.NewReader(body,
		zstd.WithDecoderMaxWindow(zstdWindow),
		zstd.WithDecoderMaxMemory(64<<20),
		zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	cr := &contentReader{r: bufio.NewReaderSize(zr, 64<<10), o: o, hb: hb}
	out, perr := cr.read()
	if perr != nil {
		var se *sinkError
		if errors.As(perr, &se) {
			return nil, se.err
		}
		return nil, classify(perr, cr.r, chunks)
	}
	out.Header = *h
	return out, nil
}

// openPayload checks that the payload is what the header says and returns
// the plain body.
func openPayload(chunks *chunkReader, h *BackupHeader, ids []age.Identity) (io.Reader, error) {
	br := bufio.NewReaderSize(chunks, 64<<10)
	if h.Encrypted {
		if p, _ := br.Peek(len(ageMagic)); string(p) != ageMagic {
			if chunks.err != nil {
				return nil, chunks.err
			}
			return nil, NewError(ErrCorruptBackup, "payload", "the header says encrypted but the payload is not an age file")
		}
		if len(ids) == 0 {
			return nil, NewError(ErrEncryptedBackup, "payload", "it is encrypted to %s: pass the matching age identity (--identity KEYFILE)", strings.Join(h.Recipients, ", "))
		}
		body, err := age.Decrypt(br, ids...)
		if err != nil {
			if chunks.err != nil {
				return nil, chunks.err
			}
			return nil, decryptError(err, h, ids)
		}
		return body, nil
	}
	if p, _ := br.Peek(len(zstdMagic)); string(p) != zstdMagic {
		if chunks.err != nil {
			return nil, chunks.err
		}
		return nil, NewError(ErrCorruptBackup, "payload", "the header says not encrypted but the payload is not zstd")
	}
	return br, nil
}

// decryptError tells a wrong key from a damaged file: age reports both as
// "no identity matched" when the damage is in the recipient stanzas, but if
// one of the identities belongs to a recipient the header names, the key is
// right and the file is not.
func decryptError(err error, h *BackupHeader, ids []age.Identity) error {
	var nomatch *age.NoIdentityMatchError
	if !errors.As(err, &nomatch) {
		return NewError(ErrCorruptBackup, "payload", "age: %v", err)
	}
	var mine []string
	for _, id := range ids {
		if x, ok := id.(*age.X25519Identity); ok {
			mine = append(mine, x.Recipient().String())
		}
	}
	for _, m := range mine {
		for _, r := range h.Recipients {
			if m == r {
				return NewError(ErrCorruptBackup, "payload", "the age stanza for recipient %s does not open with its identity", r)
			}
		}
	}
	return NewError(ErrWrongIdentity, "payload", "the backup is encrypted to %s; the identity given is for %s",
		strings.Join(h.Recipients, ", "), strings.Join(mine, ", "))
}

// classify turns a parse failure into the clearest reason: it reads what
// is left of the body so that damage to a lower layer (a chunk's CRC, the
// end of the file, age's authentication, zstd's checksum) is reported
// instead of the garbage it produced above it.
func classify(perr error, rest io.Reader, chunks *chunkReader) error {
	_, lerr := io.Copy(io.Discard, rest)
	if chunks.err != nil {
		return chunks.err
	}
	var ee *EnvelopeError
	if errors.As(perr, &ee) {
		return ee
	}
	if lerr != nil {
		return NewError(ErrCorruptBackup, "payload", "%v", lerr)
	}
	if errors.Is(perr, io.ErrUnexpectedEOF) || errors.Is(perr, io.EOF) || errors.Is(perr, errSnapshotIncomplete) {
		return NewError(ErrCorruptBackup, "end", "the content ends before its seal although the payload is complete: %v", perr)
	}
	return NewError(ErrCorruptBackup, "payload", "%v", perr)
}

type contentReader struct {
	r  *bufio.Reader
	o  ReadOptions
	hb []byte
}

func (c *contentReader) full(part string, b []byte) error {
	if _, err := io.ReadFull(c.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: %w", part, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("%s: %w", part, err)
	}
	return nil
}

func (c *contentReader) u16(part string) (uint16, error) {
	var b [2]byte
	err := c.full(part, b[:])
	return binary.BigEndian.Uint16(b[:]), err
}

func (c *contentReader) u32(part string) (uint32, error) {
	var b [4]byte
	err := c.full(part, b[:])
	return binary.BigEndian.Uint32(b[:]), err
}

func (c *contentReader) tag(part string) (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("%s: %w", part, io.ErrUnexpectedEOF)
		}
		return 0, fmt.Errorf("%s: %w", part, err)
	}
	return b, nil
}

func (c *contentReader) read() (*EnvelopeContents, error) {
	out := &EnvelopeContents{Files: []BackupFile{}}
	// The header copy.
	t, err := c.tag("header copy")
	if err != nil {
		return nil, err
	}
	if t != recHeader {
		return nil, NewError(ErrCorruptBackup, "header copy", "record %q where the header copy belongs", t)
	}
	n, err := c.u32("header copy")
	if err != nil {
		return nil, err
	}
	if int(n) != len(c.hb) {
		return nil, NewError(ErrCorruptBackup, "header copy", "it is %d bytes, the clear header %d: the clear header was changed", n, len(c.hb))
	}
	hc := make([]byte, n)
	if err := c.full("header copy", hc); err != nil {
		return nil, err
	}
	if !bytes.Equal(hc, c.hb) {
		return nil, NewError(ErrCorruptBackup, "header copy", "the clear header differs from the one inside the payload: it was changed")
	}
	// Files, then the snapshot.
	var last string
	for {
		t, err := c.tag("file")
		if err != nil {
			return nil, err
		}
		if t == recSnapshot {
			break
		}
		if t != recFile {
			return nil, NewError(ErrCorruptBackup, "file", "record %q where a file or the snapshot belongs", t)
		}
		if len(out.Files) >= MaxBackupFiles {
			return nil, NewError(ErrCorruptBackup, "file", "more than %d files", MaxBackupFiles)
		}
		f, data, err := c.file(last)
		if err != nil {
			return nil, err
		}
		last = f.Path
		out.Files = append(out.Files, f)
		if c.o.File != nil {
			if err := c.o.File(f.Path, f.Mode, data); err != nil {
				return nil, &sinkError{err}
			}
		}
	}
	size, sum, err := c.snapshot()
	if err != nil {
		return nil, err
	}
	// The seal.
	if t, err = c.tag("seal"); err != nil {
		return nil, err
	}
	if t != recSeal {
		return nil, NewError(ErrCorruptBackup, "seal", "record %q where the seal belongs", t)
	}
	var seal [8 + sha256.Size + 4]byte
	if err := c.full("seal", seal[:]); err != nil {
		return nil, err
	}
	if want := binary.BigEndian.Uint64(seal[:8]); want != uint64(size) {
		return nil, NewError(ErrCorruptBackup, "seal", "the snapshot is %d bytes, the seal says %d", size, want)
	}
	if !bytes.Equal(seal[8:8+sha256.Size], sum) {
		return nil, NewError(ErrCorruptBackup, "seal", "the snapshot's sha256 is %x, the seal says %x", sum, seal[8:8+sha256.Size])
	}
	if want := binary.BigEndian.Uint32(seal[8+sha256.Size:]); want != uint32(len(out.Files)) {
		return nil, NewError(ErrCorruptBackup, "seal", "%d files, the seal says %d", len(out.Files), want)
	}
	// Nothing after the seal, and every layer below must end cleanly.
	if b, err := c.r.ReadByte(); err == nil {
		return nil, NewError(ErrCorruptBackup, "end", "data after the seal (0x%02x…)", b)
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	out.SnapshotSize = size
	out.SnapshotSHA256 = hex.EncodeToString(sum)
	return out, nil
}

func (c *contentReader) file(last string) (BackupFile, []byte, error) {
	pl, err := c.u16("file")
	if err != nil {
		return BackupFile{}, nil, err
	}
	if pl == 0 || pl > maxPathLen {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "path length %d is outside 1..%d", pl, maxPathLen)
	}
	pb := make([]byte, pl)
	if err := c.full("file", pb); err != nil {
		return BackupFile{}, nil, err
	}
	p := string(pb)
	if !validBackupPath(p) {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "%q is not a relative clean path", p)
	}
	if p <= last {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "%s comes after %s: paths must increase", p, last)
	}
	mode, err := c.u32("file " + p)
	if err != nil {
		return BackupFile{}, nil, err
	}
	if mode != 0o600 && mode != 0o644 {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "%s has mode %#o; only 0600 and 0644", p, mode)
	}
	size, err := c.u32("file " + p)
	if err != nil {
		return BackupFile{}, nil, err
	}
	if size > MaxBackupFile {
		return BackupFile{}, nil, NewError(ErrCorruptBackup, "file", "%s is %d bytes, more than %d", p, size, MaxBackupFile)
	}
	data := make([]byte, size)
	if err := c.full("file "+p, data); err != nil {
		return BackupFile{}, nil, err
	}
	sum := sha256.Sum256(data)
	return BackupFile{Path: p, Mode: fs.FileMode(mode), Size: int(size), SHA256: hex.EncodeToString(sum[:])}, data, nil
}

func (c *contentReader) snapshot() (int64, []byte, error) {
	h := sha256.New()
	var sink io.Writer = hashOnly{h}
	if c.o.Snapshot != nil {
		sink = io.MultiWriter(h, sinkWriter{c.o.Snapshot})
	}
	var size int64
	for {
		n, err := c.u32("snapshot")
		if err != nil {
			return size, nil, err
		}
		if n == 0 {
			break
		}
		if n > MaxSnapshotChunk {
			return size, nil, NewError(ErrCorruptBackup, "snapshot", "a chunk of %d bytes at offset %d, more than %d", n, size, MaxSnapshotChunk)
		}
		m, err := io.CopyN(sink, c.r, int64(n))
		size += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				return size, nil, fmt.Errorf("snapshot at offset %d: %w", size, errSnapshotIncomplete)
			}
			return size, nil, err
		}
	}
	return size, h.Sum(nil), nil
}

type hashOnly struct{ h hash.Hash }

func (w hashOnly) Write(p []byte) (int, error) { return w.h.Write(p) }
