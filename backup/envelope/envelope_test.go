package envelope_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/backup/envelope/envelopetest"
)

// testKey signs every test backup; testTrust trusts it.
func testKey() ed25519.PrivateKey { return envelopetest.SigningKey(1) }

func testTrust() envelope.Trust { return envelopetest.Trust(testKey()) }

func testHeader() envelope.BackupHeader {
	return envelope.BackupHeader{
		Cluster:            "lab",
		KubernetesVersion:  "v1.37.2",
		EtcdVersion:        "3.7.3",
		EtcdStorageVersion: "3.7.0",
		Revision:           4242,
		Members: []envelope.BackupMember{{
			Name: "lab-m1", ID: "8e9e05c52164694d",
			PeerURLs: []string{"https://10.0.0.11:2380"}, ClientURLs: []string{"https://10.0.0.11:2379"},
		}},
		Node:         "lab-m1",
		Created:      time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
		AnvilVersion: "v0.1.0",
		Trigger:      envelope.TriggerManual,
		CACertHash:   "sha256:" + strings.Repeat("ab", 32),
	}
}

// testSnapshot is deterministic bytes that compress somewhat, like a real
// database: runs of text between random bytes.
func testSnapshot(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		if i%64 < 40 {
			b[i] = "etcd-backup-payload-"[i%20]
		} else {
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

type testFile struct {
	path string
	mode fs.FileMode
	data []byte
}

func testFiles() []testFile {
	return []testFile{
		{"etc/anvil/cluster.yaml", 0o600, []byte("name: lab\n")},
		{"etc/anvil/encryption-config.yaml", 0o600, []byte("kind: EncryptionConfiguration\n")},
		{"etc/kubernetes/pki/ca.crt", 0o644, []byte("-----BEGIN CERTIFICATE-----\n")},
		{"etc/kubernetes/pki/ca.key", 0o600, []byte("-----BEGIN PRIVATE KEY-----\n")},
	}
}

func buildEnvelope(t testing.TB, h envelope.BackupHeader, recipients []string, snapshot []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := envelope.NewEnvelopeWriter(&buf, h, recipients, testKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range testFiles() {
		if err := w.AddFile(f.path, f.mode, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.WriteSnapshot(bytes.NewReader(snapshot)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(b []byte, ids ...age.Identity) (*envelope.EnvelopeContents, []byte, map[string][]byte, error) {
	var snap bytes.Buffer
	files := map[string][]byte{}
	c, err := envelope.ReadEnvelope(bytes.NewReader(b), envelope.ReadOptions{
		Identities: ids,
		Trust:      testTrust(),
		Snapshot:   &snap,
		File: func(p string, _ fs.FileMode, data []byte) error {
			files[p] = data
			return nil
		},
	})
	return c, snap.Bytes(), files, err
}

func TestEnvelopeRoundTrip(t *testing.T) {
	snapshot := testSnapshot(3<<20 + 123)
	id1, id2 := envelopetest.NewIdentity(t), envelopetest.NewIdentity(t)
	for _, tc := range []struct {
		name       string
		recipients []string
		ids        []age.Identity
	}{
		{"plain", nil, nil},
		{"one recipient", []string{id1.Recipient().String()}, []age.Identity{id1}},
		{"two recipients, second key", []string{id1.Recipient().String(), id2.Recipient().String()}, []age.Identity{id2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := buildEnvelope(t, testHeader(), tc.recipients, snapshot)
			c, snap, files, err := readAll(b, tc.ids...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(snap, snapshot) {
				t.Fatalf("snapshot differs: %d bytes, want %d", len(snap), len(snapshot))
			}
			sum := sha256.Sum256(snapshot)
			if c.SnapshotSHA256 != hex.EncodeToString(sum[:]) || c.SnapshotSize != int64(len(snapshot)) {
				t.Errorf("seal: %s %d", c.SnapshotSHA256, c.SnapshotSize)
			}
			if c.Header.Encrypted != (len(tc.recipients) > 0) || len(c.Header.Recipients) != len(tc.recipients) {
				t.Errorf("header: encrypted %v, recipients %v", c.Header.Encrypted, c.Header.Recipients)
			}
			for _, f := range testFiles() {
				if !bytes.Equal(files[f.path], f.data) {
					t.Errorf("file %s: %q", f.path, files[f.path])
				}
			}
			if len(c.Files) != len(testFiles()) || c.Files[2].Mode != 0o644 {
				t.Errorf("files: %+v", c.Files)
			}
			h, err := envelope.ReadBackupHeader(bytes.NewReader(b))
			if err != nil || h.Cluster != "lab" || h.Revision != 4242 {
				t.Errorf("header alone: %+v %v", h, err)
			}
			if len(tc.recipients) > 0 && bytes.Contains(b, snapshot[:64]) {
				t.Error("an encrypted backup holds plain snapshot bytes")
			}
		})
	}
}

// TestEnvelopeEmptySnapshot: the smallest valid envelope round-trips too.
func TestEnvelopeEmptySnapshot(t *testing.T) {
	var buf bytes.Buffer
	w, err := envelope.NewEnvelopeWriter(&buf, testHeader(), nil, testKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteSnapshot(bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := envelope.ReadEnvelope(bytes.NewReader(buf.Bytes()), envelope.ReadOptions{Trust: testTrust()})
	if err != nil || c.SnapshotSize != 0 || len(c.Files) != 0 {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestEnvelopeWriterRefuses(t *testing.T) {
	bad := testHeader()
	bad.Cluster = "Not A Name"
	if _, err := envelope.NewEnvelopeWriter(io.Discard, bad, nil, testKey()); err == nil || !strings.Contains(err.Error(), "header field cluster") {
		t.Errorf("bad header: %v", err)
	}
	if _, err := envelope.NewEnvelopeWriter(io.Discard, testHeader(), []string{"age1nope"}, testKey()); err == nil {
		t.Error("a bad recipient was accepted")
	}
	w, err := envelope.NewEnvelopeWriter(io.Discard, testHeader(), nil, testKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		mode fs.FileMode
	}{{"/etc/abs", 0o600}, {"etc/../x", 0o600}, {"etc/x", 0o755}, {"", 0o600}} {
		if err := w.AddFile(tc.path, tc.mode, nil); err == nil {
			t.Errorf("AddFile(%q, %v) accepted", tc.path, tc.mode)
		}
	}
	if err := w.AddFile("b", 0o600, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("a", 0o600, nil); err == nil {
		t.Error("decreasing paths accepted")
	}
	if err := w.Close(); err == nil {
		t.Error("Close without a snapshot succeeded")
	}
}

// kindOf names the sentinel an error wraps.
func kindOf(err error) string {
	for _, k := range []struct {
		name string
		err  error
	}{
		{"not-backup", envelope.ErrNotBackup}, {"format", envelope.ErrUnsupportedFormat},
		{"corrupt", envelope.ErrCorruptBackup}, {"truncated", envelope.ErrTruncatedBackup},
		{"encrypted", envelope.ErrEncryptedBackup}, {"wrong-identity", envelope.ErrWrongIdentity},
		{"untrusted", envelope.ErrUntrusted}, {"unsigned", envelope.ErrUnsigned}, {"no-trust", envelope.ErrNoTrust},
	} {
		if errors.Is(err, k.err) {
			var ee *envelope.EnvelopeError
			if !errors.As(err, &ee) {
				return k.name + " (not an *envelope.EnvelopeError)"
			}
			return k.name
		}
	}
	if err == nil {
		return "ok"
	}
	return "other: " + err.Error()
}

// TestEnvelopeFlippedBits flips one bit at many places of plain and
// encrypted backups: every one is refused as corrupt (or, in the magic and
// the format version, as not a backup / an unsupported format).
func TestEnvelopeFlippedBits(t *testing.T) {
	snapshot := testSnapshot(600 << 10)
	id := envelopetest.NewIdentity(t)
	for _, tc := range []struct {
		name       string
		recipients []string
	}{{"plain", nil}, {"encrypted", []string{id.Recipient().String()}}} {
		t.Run(tc.name, func(t *testing.T) {
			b := buildEnvelope(t, testHeader(), tc.recipients, snapshot)
			var ids []age.Identity
			if tc.recipients != nil {
				ids = append(ids, id)
			}
			r := rand.New(rand.NewPCG(3, 4))
			var offsets []int
			for i := 0; i < 400; i++ { // every bit of the first bytes: magic, version, length, header
				offsets = append(offsets, i)
			}
			for i := 0; i < 400; i++ {
				offsets = append(offsets, 400+r.IntN(len(b)-400))
			}
			// the signature's last bytes and first, and the end marker's total
			offsets = append(offsets, len(b)-1, len(b)-2, len(b)-40, len(b)-envelope.SignatureSize, len(b)-envelope.SignatureSize-1)
			for _, off := range offsets {
				c := bytes.Clone(b)
				c[off] ^= 1 << (off % 8)
				_, _, _, err := readAll(c, ids...)
				got := kindOf(err)
				want := "corrupt"
				switch {
				case off < 8:
					want = "not-backup"
				case off < 10:
					want = "format"
				case off >= len(b)-envelope.SignatureSize:
					// The signature itself: a damaged signature and a
					// forged one look the same.
					want = "untrusted"
				}
				if got != want {
					t.Errorf("bit flipped at %d of %d: %s, want %s (%v)", off, len(b), got, want, err)
				}
			}
		})
	}
}

// TestEnvelopeTruncated cuts backups short everywhere: always refused as
// truncated (a cut inside the magic leaves too little to tell).
func TestEnvelopeTruncated(t *testing.T) {
	snapshot := testSnapshot(300 << 10)
	id := envelopetest.NewIdentity(t)
	for _, tc := range []struct {
		name       string
		recipients []string
	}{{"plain", nil}, {"encrypted", []string{id.Recipient().String()}}} {
		t.Run(tc.name, func(t *testing.T) {
			b := buildEnvelope(t, testHeader(), tc.recipients, snapshot)
			var ids []age.Identity
			if tc.recipients != nil {
				ids = append(ids, id)
			}
			cuts := []int{1, 7, 8, 13, 14, 100, len(b) / 2, len(b) - 1, len(b) - 17, len(b) - 100}
			r := rand.New(rand.NewPCG(5, 6))
			for i := 0; i < 100; i++ {
				cuts = append(cuts, 1+r.IntN(len(b)-1))
			}
			for _, n := range cuts {
				_, _, _, err := readAll(b[:n], ids...)
				if got := kindOf(err); got != "truncated" {
					t.Errorf("cut to %d of %d bytes: %s (%v)", n, len(b), got, err)
				}
			}
			if _, _, _, err := readAll(nil, ids...); kindOf(err) != "not-backup" {
				t.Errorf("empty file: %v", err)
			}
		})
	}
}

func TestEnvelopeIdentities(t *testing.T) {
	id, other := envelopetest.NewIdentity(t), envelopetest.NewIdentity(t)
	b := buildEnvelope(t, testHeader(), []string{id.Recipient().String()}, testSnapshot(1000))
	_, _, _, err := readAll(b)
	if kindOf(err) != "encrypted" || !strings.Contains(err.Error(), id.Recipient().String()) {
		t.Errorf("no identity: %v", err)
	}
	_, _, _, err = readAll(b, other)
	if kindOf(err) != "wrong-identity" || !strings.Contains(err.Error(), other.Recipient().String()) {
		t.Errorf("wrong identity: %v", err)
	}
	if _, _, _, err = readAll(b, other, id); err != nil {
		t.Errorf("the right identity among others: %v", err)
	}
}

// TestEnvelopeTamperedHeader: someone edits the clear header of an
// encrypted backup (to pass it off as another cluster's) and fixes the
// CRC; the authenticated copy inside gives it away.
func TestEnvelopeTamperedHeader(t *testing.T) {
	id := envelopetest.NewIdentity(t)
	b := buildEnvelope(t, testHeader(), []string{id.Recipient().String()}, testSnapshot(5000))
	// Re-signed with the cluster's key: only the header copy is left to
	// catch it (TestEnvelopeSignature refuses it without the key).
	tampered := envelopetest.Resign(envelopetest.RewriteHeader(t, b, func(h *envelope.BackupHeader) { h.Cluster = "other" }), testKey())
	h, err := envelope.ReadBackupHeader(bytes.NewReader(tampered))
	if err != nil || h.Cluster != "other" || !h.Encrypted {
		t.Fatalf("the tampered header itself: %+v %v", h, err)
	}
	if _, _, _, err := readAll(tampered, id); kindOf(err) != "corrupt" || !strings.Contains(err.Error(), "changed") {
		t.Errorf("tampered header: %v", err)
	}
}

func TestEnvelopeTrailingAndOddData(t *testing.T) {
	b := buildEnvelope(t, testHeader(), nil, testSnapshot(5000))
	if _, _, _, err := readAll(append(bytes.Clone(b), 0)); kindOf(err) != "corrupt" {
		t.Errorf("a byte after the end: %v", err)
	}
	if _, _, _, err := readAll([]byte("#!/bin/sh\necho hi\n")); kindOf(err) != "not-backup" {
		t.Errorf("a script: %v", err)
	}
	future := bytes.Clone(b)
	binary.BigEndian.PutUint16(future[8:], 3)
	if _, _, _, err := readAll(future); kindOf(err) != "format" || !strings.Contains(err.Error(), "version 3") {
		t.Errorf("format 3: %v", err)
	}
	// The same header with different key order or spacing has the same
	// meaning but is not canonical: refused.
	plainHeader := envelopetest.Resign(envelopetest.RewriteHeader(t, b, func(h *envelope.BackupHeader) { h.Node = "lab-m2" }), testKey())
	if _, err := envelope.ReadBackupHeader(bytes.NewReader(plainHeader)); err != nil {
		t.Fatalf("a rewritten canonical header: %v", err)
	}
	if _, _, _, err := readAll(plainHeader); kindOf(err) != "corrupt" || !strings.Contains(err.Error(), "changed") {
		t.Errorf("clear header differing from its copy: %v", err)
	}
}

// A sink that fails is the caller's problem, not the backup's.
func TestEnvelopeSinkError(t *testing.T) {
	b := buildEnvelope(t, testHeader(), nil, testSnapshot(2<<20))
	boom := errors.New("disk full")
	_, err := envelope.ReadEnvelope(bytes.NewReader(b), envelope.ReadOptions{Trust: testTrust(), Snapshot: failingWriter{boom}})
	if !errors.Is(err, boom) || errors.Is(err, envelope.ErrCorruptBackup) {
		t.Errorf("got %v", err)
	}
	_, err = envelope.ReadEnvelope(bytes.NewReader(b), envelope.ReadOptions{Trust: testTrust(), File: func(string, fs.FileMode, []byte) error { return boom }})
	if !errors.Is(err, boom) {
		t.Errorf("file callback: %v", err)
	}
	refuse := errors.New("another cluster")
	_, err = envelope.ReadEnvelope(bytes.NewReader(b), envelope.ReadOptions{Trust: testTrust(), CheckHeader: func(*envelope.BackupHeader) error { return refuse }})
	if !errors.Is(err, refuse) {
		t.Errorf("CheckHeader: %v", err)
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

// etcdSnapshot looks like what etcd's maintenance API streams: whole pages,
// then their sha256.
func etcdSnapshot(pages int) []byte {
	db := testSnapshot(pages * 4096)
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

// TestVerifyBackup: with the key (or without encryption) every layer is
// checked, etcd's own trailer included; without the key of an encrypted
// backup, the header and the payload's framing still catch a flipped bit
// or a cut anywhere.
func TestVerifyBackup(t *testing.T) {
	id := envelopetest.NewIdentity(t)
	snap := etcdSnapshot(100)
	plain := buildEnvelope(t, testHeader(), nil, snap)
	enc := buildEnvelope(t, testHeader(), []string{id.Recipient().String()}, snap)

	for _, tc := range []struct {
		name     string
		b        []byte
		ids      []age.Identity
		contents bool
	}{
		{"plain", plain, nil, true},
		{"encrypted with its key", enc, []age.Identity{id}, true},
		{"encrypted without its key", enc, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := envelope.VerifyBackup(bytes.NewReader(tc.b), tc.ids, testTrust())
			if err != nil {
				t.Fatal(err)
			}
			if (v.Contents != nil) != tc.contents || v.Header.Cluster != "lab" {
				t.Fatalf("%+v", v)
			}
			if tc.contents && v.Contents.SnapshotSize != int64(len(snap)) {
				t.Errorf("snapshot size %d", v.Contents.SnapshotSize)
			}
			r := rand.New(rand.NewPCG(7, 8))
			for range 200 {
				off := 400 + r.IntN(len(tc.b)-400)
				c := bytes.Clone(tc.b)
				c[off] ^= 1 << (off % 8)
				if _, err := envelope.VerifyBackup(bytes.NewReader(c), tc.ids, testTrust()); kindOf(err) != "corrupt" {
					t.Fatalf("bit flipped at %d of %d: %s (%v)", off, len(tc.b), kindOf(err), err)
				}
				n := 1 + r.IntN(len(tc.b)-1)
				if _, err := envelope.VerifyBackup(bytes.NewReader(tc.b[:n]), tc.ids, testTrust()); kindOf(err) != "truncated" {
					t.Fatalf("cut to %d of %d: %s (%v)", n, len(tc.b), kindOf(err), err)
				}
			}
		})
	}
	// A snapshot without etcd's sha256 trailer is not what etcd streams.
	odd := buildEnvelope(t, testHeader(), nil, testSnapshot(5000))
	if _, err := envelope.VerifyBackup(bytes.NewReader(odd), nil, testTrust()); kindOf(err) != "corrupt" || !strings.Contains(err.Error(), "etcd's sha256") {
		t.Errorf("a snapshot without etcd's trailer: %v", err)
	}
}

// TestEnvelopeNoDowngrade plays someone who replaces an encrypted backup
// with a plain one of their own making: whoever gives an identity expects
// an encrypted backup, and a plain one is refused before it is read.
func TestEnvelopeNoDowngrade(t *testing.T) {
	id := envelopetest.NewIdentity(t)
	plain := buildEnvelope(t, testHeader(), nil, etcdSnapshot(2))
	if _, _, _, err := readAll(plain, id); !errors.Is(err, envelope.ErrNotEncrypted) {
		t.Errorf("envelope.ReadEnvelope of a plain backup with an identity: %v, want ErrNotEncrypted", err)
	}
	if _, err := envelope.VerifyBackup(bytes.NewReader(plain), []age.Identity{id}, testTrust()); !errors.Is(err, envelope.ErrNotEncrypted) {
		t.Errorf("envelope.VerifyBackup of a plain backup with an identity: %v, want ErrNotEncrypted", err)
	}
	if _, _, _, err := readAll(plain); err != nil {
		t.Errorf("a plain backup without an identity: %v", err)
	}
}
