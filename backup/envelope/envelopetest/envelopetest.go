package envelopetest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"

	"anvil.dev/anvil/backup/envelope"
)

// NewIdentity is a fresh age identity.
func NewIdentity(t testing.TB) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// SigningKey is a backup signing key made from seed, so a test (and a fuzz
// corpus) gets the same key every run.
func SigningKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// Trust trusts key's signatures.
func Trust(key ed25519.PrivateKey) envelope.Trust {
	return envelope.Trust{Keys: []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}}
}

// Resign replaces the signature at the end of b (a format-2 backup) with
// key's signature of what comes before it: what the holder of the
// cluster's signing key could write, so that tests and fuzzing reach the
// checks after the signature's.
func Resign(b []byte, key ed25519.PrivateKey) []byte {
	if len(b) < envelope.SignatureSize {
		return b
	}
	out := bytes.Clone(b)
	body := out[:len(out)-envelope.SignatureSize]
	sum := sha256.Sum256(body)
	copy(out[len(body):], ed25519.Sign(key, envelope.SignatureMessage(sum[:])))
	return out
}

// RewriteHeader replaces the clear header of b with its edited encoding and
// a correct CRC: what someone who edits the clear text would do.
func RewriteHeader(t testing.TB, b []byte, edit func(*envelope.BackupHeader)) []byte {
	t.Helper()
	h, err := envelope.ReadBackupHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	oldLen := binary.BigEndian.Uint32(b[10:14])
	edit(h)
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte{}, b[:10]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(hb)))
	out = append(out, hb...)
	crc := crc32.Checksum(out, crc32.MakeTable(crc32.Castagnoli))
	out = binary.BigEndian.AppendUint32(out, crc)
	return append(out, b[14+oldLen+4:]...)
}

// File is one file record a crafted backup carries: Path is the host path
// without its leading slash, as the envelope stores it.
type File struct {
	Path string
	Mode fs.FileMode
	Data []byte
}

// Craft writes a backup with whatever header, files and snapshot an
// attacker chooses, encrypted to recipients (public keys anyone can read
// in a backup's clear header) and signed with key: the cluster's own to
// test the checks after the signature's, any other to play a forger.
func Craft(t testing.TB, h envelope.BackupHeader, recipients []string, key ed25519.PrivateKey, files []File, snapshot []byte) []byte {
	t.Helper()
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	var b bytes.Buffer
	w, err := envelope.NewEnvelopeWriter(&b, h, recipients, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := w.AddFile(f.Path, f.Mode, f.Data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.WriteSnapshot(bytes.NewReader(snapshot)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// EtcdSnapshot is bytes that pass as an etcd snapshot: whole pages, then
// the sha256 etcd appends.
func EtcdSnapshot(pages int) []byte {
	db := bytes.Repeat([]byte("anvil test page "), pages*4096/16)
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}
