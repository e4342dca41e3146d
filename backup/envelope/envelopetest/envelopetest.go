package envelopetest

import (
	"bytes"
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
// in a backup's clear header).
func Craft(t testing.TB, h envelope.BackupHeader, recipients []string, files []File, snapshot []byte) []byte {
	t.Helper()
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	var b bytes.Buffer
	w, err := envelope.NewEnvelopeWriter(&b, h, recipients)
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
