package envelope

import (
	"errors"
	"fmt"
	"hash/crc32"
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
//	                u32 0, u64 total payload bytes
//	…       64    (format 2) the ed25519 signature, by the key the
//	              header's signingKey names, of the context string
//	              "anvil backup envelope signature v2\x00" followed by the
//	              sha256 of every byte before it; then the end of the file
//	body = one zstd stream of the content:
//	  'H' u32 N, N bytes   the header again, byte for byte: under age a
//	                       clear header edited alone is caught (not one
//	                       written anew with its body, see below)
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
// truncated file whether or not it is encrypted; age's AEAD catches any
// change to the encrypted body and the header copy any edit of the clear
// header alone; zstd checks its frame checksum; the seal checks the
// snapshot's size and sha256. None of that says who wrote the backup: age
// (X25519) does not authenticate the sender, and the recipients' public
// keys are in every header, so anyone can write a backup whose header,
// seal and CRCs all pass. The signature does: only a holder of the
// cluster's backup signing key (on its masters) can make one that
// verifies. Readers check the header's signingKey against the keys they
// trust (Trust) before reading on, and the signature over the whole file
// before they decrypt or decompress any of the body; a format-1 backup,
// which has no signature, is refused unless Trust.AllowUnsigned.
// A reader treats nothing as valid until the seal and the end of every
// layer have been checked.

// EnvelopeFormat is the envelope version this anvil writes; it reads
// minEnvelopeFormat to EnvelopeFormat. Format 2 added the signature (the
// header's signingKey and the signature after the payload's end marker).
const (
	EnvelopeFormat    = 2
	minEnvelopeFormat = 1
)

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

// Sentinel errors of the envelope; every *EnvelopeError wraps one of them.
var (
	ErrNotBackup          = errors.New("not an anvil backup")
	ErrUnsupportedFormat  = errors.New("unsupported backup format")
	ErrCorruptBackup      = errors.New("backup is corrupt")
	ErrTruncatedBackup    = errors.New("backup is truncated")
	ErrEncryptedBackup    = errors.New("backup is encrypted and no identity was given")
	ErrWrongIdentity      = errors.New("no given identity can decrypt the backup")
	ErrNotEncrypted       = errors.New("backup is not encrypted although an identity was given")
	errSnapshotIncomplete = errors.New("the snapshot stream ended early")
)

// EnvelopeError says what is wrong with a backup and where.
type EnvelopeError struct {
	// Err is one of ErrNotBackup, ErrUnsupportedFormat, ErrCorruptBackup,
	// ErrTruncatedBackup, ErrEncryptedBackup, ErrWrongIdentity,
	// ErrNotEncrypted.
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
