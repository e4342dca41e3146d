package envelope

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// The writer: header, files, snapshot and seal in one pass, through zstd,
// age when encrypted, and the payload's chunks.

// EnvelopeWriter writes a backup envelope in one pass: the header when it is
// made, then files, then the snapshot, then the seal on Close.
type EnvelopeWriter struct {
	out      *signingWriter
	key      ed25519.PrivateKey
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
// encrypted. key signs the backup (Close writes the signature).
// h.Encrypted, h.Recipients, h.Compression and h.SigningKey are set here.
func NewEnvelopeWriter(w io.Writer, h BackupHeader, recipients []string, key ed25519.PrivateKey) (*EnvelopeWriter, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("backup envelope: no signing key: every backup is signed")
	}
	h.SigningKey = FormatSigningKey(key.Public().(ed25519.PublicKey))
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
	e := &EnvelopeWriter{out: &signingWriter{w: w, h: sha256.New()}, key: key}
	if err := writeHeader(e.out, hb, EnvelopeFormat); err != nil {
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
	if err := e.chunks.Close(); err != nil {
		return err
	}
	return e.out.sign(e.key)
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
