package envelope_test

import (
	"bytes"
	"errors"
	"io/fs"
	"reflect"
	"testing"

	"filippo.io/age"

	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/backup/envelope/envelopetest"
)

// fuzzIdentity is a key made for this test only, so the fuzzer can reach
// past the decryption of the encrypted seeds.
const fuzzIdentity = "AGE-SECRET-KEY-1RJFDRFLQQRSYM5LPYFUTKPC5SWXNGJ09P93R6ZM4XE5Y3H5WKKZQ4JYU2C"

// FuzzEnvelope feeds arbitrary bytes to the envelope reader. It must never
// panic; every failure must be an *EnvelopeError naming what is wrong; and
// whatever it accepts must be a backup that round-trips: its clear header
// reads alone the same way, and writing its content again and reading that
// gives the same content.
func FuzzEnvelope(f *testing.F) {
	id, err := age.ParseX25519Identity(fuzzIdentity)
	if err != nil {
		f.Fatal(err)
	}
	empty := func() []byte {
		var b bytes.Buffer
		w, _ := envelope.NewEnvelopeWriter(&b, testHeader(), nil, testKey())
		w.WriteSnapshot(bytes.NewReader(nil))
		w.Close()
		return b.Bytes()
	}()
	f.Add(empty)
	f.Add(buildEnvelope(f, testHeader(), nil, testSnapshot(300)))
	f.Add(buildEnvelope(f, testHeader(), []string{id.Recipient().String()}, testSnapshot(200)))
	// A plain backup with a damaged payload chunk: refused as damaged
	// whether or not an identity is given.
	damaged := buildEnvelope(f, testHeader(), nil, testSnapshot(300))
	damaged[len(damaged)/2] ^= 0x40
	f.Add(damaged)
	f.Add([]byte("ANVILBAK"))
	f.Add([]byte{})

	f.Add(buildEnvelope(f, testHeader(), nil, etcdSnapshot(3)))
	f.Add(buildEnvelope(f, testHeader(), []string{id.Recipient().String()}, etcdSnapshot(2)))

	f.Fuzz(func(t *testing.T, data []byte) {
		// Signed anew by the cluster's key, so that fuzzing reaches every
		// check after the signature's (which TestEnvelopeSignature covers).
		data = envelopetest.Resign(data, testKey())
		complete := func(what string, err error) {
			var ee *envelope.EnvelopeError
			if !errors.As(err, &ee) || ee.Err == nil || ee.Part == "" || ee.Detail == "" {
				t.Fatalf("%s: not a complete *envelope.EnvelopeError: %T %v", what, err, err)
			}
		}
		// VerifyBackup without the key (the framing of an encrypted
		// backup, everything of a plain one) never panics, and accepts
		// nothing the full read refuses.
		v, verr := envelope.VerifyBackup(bytes.NewReader(data), nil, testTrust())
		if verr != nil {
			complete("envelope.VerifyBackup", verr)
		}
		// The identity is given for an encrypted backup only: with one, a
		// plain backup is refused (no downgrade) — as not encrypted when it
		// is otherwise sound, and in any case refused when it is damaged.
		var ids []age.Identity
		h, herr := envelope.ReadBackupHeader(bytes.NewReader(data))
		if herr == nil && h.Encrypted {
			ids = append(ids, id)
		}
		c, snap, files, err := readAll(data, ids...)
		if herr == nil && !h.Encrypted {
			_, _, _, iderr := readAll(data, id)
			if err == nil && !errors.Is(iderr, envelope.ErrNotEncrypted) {
				t.Fatalf("a sound plain backup read with an identity: %v, want ErrNotEncrypted", iderr)
			}
			if err != nil && iderr == nil {
				t.Fatalf("a damaged plain backup (%v) was accepted when read with an identity", err)
			}
		}
		if err != nil {
			complete("envelope.ReadEnvelope", err)
			if verr == nil && v.Contents != nil {
				t.Fatalf("envelope.VerifyBackup accepted what envelope.ReadEnvelope refuses (%v)", err)
			}
			return
		}
		if c.Header.Encrypted && verr != nil {
			t.Fatalf("the framing check without the key refused a backup that reads: %v", verr)
		}
		if verr == nil && v.Contents != nil && v.Contents.SnapshotSHA256 != c.SnapshotSHA256 {
			t.Fatalf("envelope.VerifyBackup and envelope.ReadEnvelope disagree on the snapshot")
		}
		h, herr = envelope.ReadBackupHeader(bytes.NewReader(data))
		if herr != nil || !reflect.DeepEqual(*h, c.Header) {
			t.Fatalf("envelope.ReadEnvelope accepted what envelope.ReadBackupHeader did not: %v", herr)
		}
		if int64(len(snap)) != c.SnapshotSize || len(files) != len(c.Files) {
			t.Fatalf("contents disagree: %d bytes vs %d, %d files vs %d", len(snap), c.SnapshotSize, len(files), len(c.Files))
		}
		// Write it again and read that back.
		var b bytes.Buffer
		w, err := envelope.NewEnvelopeWriter(&b, c.Header, c.Header.Recipients, testKey())
		if err != nil {
			t.Fatalf("an accepted header cannot be written: %v", err)
		}
		for _, f := range c.Files {
			if err := w.AddFile(f.Path, f.Mode, files[f.Path]); err != nil {
				t.Fatalf("an accepted file cannot be written: %v", err)
			}
		}
		if _, err := w.WriteSnapshot(bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		c2, snap2, _, err := readAll(b.Bytes(), ids...)
		if err != nil {
			t.Fatalf("a rewritten backup does not read: %v", err)
		}
		if !reflect.DeepEqual(c, c2) || !bytes.Equal(snap, snap2) {
			t.Fatalf("round trip changed the contents:\n%+v\n%+v", c, c2)
		}
		for _, f := range c.Files {
			if f.Mode != 0o600 && f.Mode != 0o644 || !fs.ValidPath(f.Path) {
				t.Fatalf("accepted file %+v", f)
			}
		}
	})
}
