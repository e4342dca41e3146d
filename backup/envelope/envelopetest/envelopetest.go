package envelopetest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
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
