package envelope

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Reading and verifying a whole backup: the layers are peeled in order
// (chunks, age, zstd, content), and a failure is reported at the lowest
// layer that is damaged.

// ReadOptions say what to do with a backup's content as it streams by.
// Nothing a callback receives is verified until ReadEnvelope returns nil.
type ReadOptions struct {
	// Identities decrypt an encrypted backup.
	Identities []age.Identity
	// Trust says whose signature the backup must carry.
	Trust Trust
	// CheckHeader runs on the clear header, once it is trusted, before
	// the rest of the file is read; its error ends the read and is
	// returned as is.
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

// ReadEnvelope reads a whole backup from r twice: first its clear header,
// framing and signature (authenticate), without opening the body; then,
// from where it started, every layer of the body, handing its content to
// o's callbacks. Problems with the backup are returned as *EnvelopeError;
// errors of the callbacks are returned as they are.
func ReadEnvelope(r io.ReadSeeker, o ReadOptions) (*EnvelopeContents, error) {
	format, err := authenticateAt(r, o.Trust, o.CheckHeader)
	if err != nil {
		return nil, err
	}
	br := newBufReader(r)
	h, hb, _, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	return readPayload(br, h, hb, format, o)
}

// authenticateAt authenticates the backup at r's offset and goes back to
// it; check runs on the header once it is trusted.
func authenticateAt(r io.ReadSeeker, trust Trust, check func(*BackupHeader) error) (uint16, error) {
	start, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, fmt.Errorf("backups are read twice, the signature first: %w", err)
	}
	_, format, err := authenticate(r, trust, check)
	if err != nil {
		return 0, err
	}
	if _, err := r.Seek(start, io.SeekStart); err != nil {
		return 0, err
	}
	return format, nil
}

func newBufReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 64<<10) }

// Verification is what VerifyBackup checked.
type Verification struct {
	Header BackupHeader `json:"header"`
	// Contents is what the backup holds, when every layer was checked (it
	// is not encrypted, or an identity opened it); nil when only the clear
	// header, the payload's framing and the signature could be.
	Contents *EnvelopeContents `json:"contents,omitempty"`
}

// VerifyBackup reads a whole backup from r and checks every layer it can:
// the clear header, the payload's framing (every chunk's CRC-32C, the end
// marker and its total) and the signature against trust, so that a
// damaged, truncated or forged copy is caught without the key; then, when
// the backup is not encrypted or ids open it, every layer of the body,
// etcd's own sha256 trailer of the snapshot included. Problems with the
// backup are *EnvelopeError.
func VerifyBackup(r io.ReadSeeker, ids []age.Identity, trust Trust) (*Verification, error) {
	start, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("backups are read twice, the signature first: %w", err)
	}
	h, _, err := authenticate(r, trust, nil)
	if err != nil {
		return nil, err
	}
	if h.Encrypted && len(ids) == 0 {
		return &Verification{Header: *h}, nil
	}
	if _, err := r.Seek(start, io.SeekStart); err != nil {
		return nil, err
	}
	trailer := NewSnapshotTrailer()
	c, err := ReadEnvelope(r, ReadOptions{Identities: ids, Trust: trust, Snapshot: trailer})
	if err != nil {
		return nil, err
	}
	if err := trailer.Check(); err != nil {
		return nil, NewError(ErrCorruptBackup, "snapshot", "%v", err)
	}
	return &Verification{Header: c.Header, Contents: c}, nil
}

// readPayload reads what follows the clear header.
func readPayload(br *bufio.Reader, h *BackupHeader, hb []byte, format uint16, o ReadOptions) (*EnvelopeContents, error) {
	chunks := newChunkReader(br, format)
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
	if len(ids) > 0 {
		// Whoever expects an encrypted backup must not be handed a plain
		// one instead: anyone can write that, age or not.
		return nil, NewError(ErrNotEncrypted, "header", "an identity was given, so the backup must be encrypted to it; this one is not encrypted (a substituted backup?)")
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
// end of the file, age's integrity check, zstd's checksum) is reported
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
