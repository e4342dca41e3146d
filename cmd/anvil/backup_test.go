package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/backup/envelope/envelopetest"
)

// execBackup runs anvil with stdin in and returns stdout, stderr and the
// exit code main would use.
func execBackup(t *testing.T, in []byte, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(bytes.NewReader(in), &out, &errOut)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return out.String(), errOut.String() + err.Error(), exitCode(err)
	}
	return out.String(), errOut.String(), 0
}

// testSnapshot looks like what etcd streams: a database of whole pages,
// then its sha256.
func testSnapshot() []byte {
	db := bytes.Repeat([]byte("snapshot"), 512)
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

// testSigningKey is the public key testBackup signs with.
func testSigningKey() string {
	return envelope.FormatSigningKey(envelopetest.SigningKey(1).Public().(ed25519.PublicKey))
}

// testBackup is a small but complete backup, as a master would write it.
func testBackup(t *testing.T, recipients ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := envelope.NewEnvelopeWriter(&buf, envelope.BackupHeader{
		Cluster: "lab", KubernetesVersion: "v1.37.2", EtcdVersion: "3.7.3", Revision: 42,
		Members: []envelope.BackupMember{{Name: "m1", ID: "0123456789abcdef", PeerURLs: []string{"https://10.0.0.1:2380"}}},
		Node:    "m1", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), AnvilVersion: "v0.1.0",
		Trigger: envelope.TriggerManual, CACertHash: "sha256:" + strings.Repeat("0", 64),
	}, recipients, envelopetest.SigningKey(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddFile("etc/anvil/cluster.yaml", 0o600, []byte("name: lab\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteSnapshot(bytes.NewReader(testSnapshot())); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBackupCommandsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"backup", "--scheduled", "-o", "x"},
		{"backup", "export-snapshot", "x"},
		{"backup", "inspect"},
		{"restore"},
		{"backup", "list", "--dir", t.TempDir(), "-o", "yaml"},
		{"backup", "--loop"},
		{"backup", "--scheduled", "--loop", "-o", "x"},
		{"restore", "--leave", "--rejoin", "https://10.0.0.1:2379"},
		{"restore", "--leave", "backup.anvilbak"},
		{"restore", "--rejoin", "https://10.0.0.1:2379", "--identity", "key"},
		{"restore", "a", "b"},
		{"cluster", "restore", "-f", "cluster.yaml"},
		{"cluster", "backup"},
	} {
		if _, errOut, code := execBackup(t, nil, args...); code == 0 {
			t.Errorf("anvil %s succeeded: %s", strings.Join(args, " "), errOut)
		}
	}
}

func TestBackupInspectListExport(t *testing.T) {
	dir := t.TempDir()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "backup.key")
	if err := os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	plain, enc := filepath.Join(dir, "a.anvilbak"), filepath.Join(dir, "b.anvilbak")
	os.WriteFile(plain, testBackup(t), 0o600)
	os.WriteFile(enc, testBackup(t, id.Recipient().String()), 0o600)

	out, _, code := execBackup(t, nil, "backup", "inspect", plain, "--signing-key", testSigningKey())
	if code != 0 || !strings.Contains(out, "NO: this backup holds the cluster's keys in the clear") || !strings.Contains(out, "yes: every layer checked") {
		t.Errorf("inspect plain: %d\n%s", code, out)
	}
	out, _, code = execBackup(t, nil, "backup", "inspect", enc, "--signing-key", testSigningKey())
	if code != 0 || !strings.Contains(out, "no: encrypted") {
		t.Errorf("inspect encrypted without key: %d\n%s", code, out)
	}
	// From stdin, with the key, as JSON.
	out, _, code = execBackup(t, testBackup(t, id.Recipient().String()), "backup", "inspect", "-", "--identity", keyFile, "-o", "json", "--signing-key", testSigningKey())
	var in backup.Inspection
	if code != 0 || json.Unmarshal([]byte(out), &in) != nil || !in.Verified || in.Contents.SnapshotSize != int64(len(testSnapshot())) {
		t.Errorf("inspect - --identity: %d %+v\n%s", code, in, out)
	}
	damaged := testBackup(t)
	damaged[len(damaged)-envelope.SignatureSize-30] ^= 4
	if _, errOut, code := execBackup(t, damaged, "backup", "inspect", "-", "--signing-key", testSigningKey()); code == 0 || !strings.Contains(errOut, "backup is corrupt") {
		t.Errorf("inspect damaged: %d %s", code, errOut)
	}

	out, _, code = execBackup(t, nil, "backup", "list", "--dir", dir, "-o", "json")
	var es []backup.BackupEntry
	if code != 0 || json.Unmarshal([]byte(out), &es) != nil || len(es) != 2 {
		t.Errorf("list: %d\n%s", code, out)
	}
	out, _, code = execBackup(t, nil, "backup", "list", "--dir", dir)
	if code != 0 || !strings.Contains(out, "CREATED") || strings.Count(out, "lab") != 2 {
		t.Errorf("list table: %d\n%s", code, out)
	}

	db := filepath.Join(dir, "out", "etcd.db")
	if _, errOut, code := execBackup(t, nil, "backup", "export-snapshot", enc, "-o", db, "--signing-key", testSigningKey()); code == 0 || !strings.Contains(errOut, "no identity was given") {
		t.Errorf("export without key: %d %s", code, errOut)
	}
	if _, err := os.Stat(db); err == nil {
		t.Error("a failed export left its file")
	}
	out, errOut, code := execBackup(t, nil, "backup", "export-snapshot", enc, "-o", db, "--identity", keyFile, "--signing-key", testSigningKey())
	if code != 0 || !strings.Contains(out, "written to "+db) {
		t.Fatalf("export: %d %s %s", code, out, errOut)
	}
	if b, err := os.ReadFile(db); err != nil || !bytes.Equal(b, testSnapshot()) {
		t.Errorf("export wrote %d bytes: %v", len(b), err)
	}
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("export: %v %v", fi, err)
	}
}

// TestBackupIdentityHandling: a key comes from a private file, or from
// stdin when the backup does not; never a readable file, never both on
// stdin.
func TestBackupIdentityHandling(t *testing.T) {
	dir := t.TempDir()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join(dir, "b.anvilbak")
	os.WriteFile(enc, testBackup(t, id.Recipient().String()), 0o600)
	open := filepath.Join(dir, "readable.key")
	os.WriteFile(open, []byte(id.String()+"\n"), 0o644)

	if _, errOut, code := execBackup(t, nil, "backup", "inspect", enc, "--identity", open, "--signing-key", testSigningKey()); code == 0 || !strings.Contains(errOut, "readable by others") || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("a key file others can read was used: %d %s", code, errOut)
	}
	if strings.Contains(func() string {
		_, e, _ := execBackup(t, nil, "backup", "inspect", enc, "--identity", open, "--signing-key", testSigningKey())
		return e
	}(), id.String()) {
		t.Error("the key appears in the error")
	}
	out, errOut, code := execBackup(t, []byte("# key\n"+id.String()+"\n"), "backup", "inspect", enc, "--identity", "-", "-o", "json", "--signing-key", testSigningKey())
	var in backup.Inspection
	if code != 0 || json.Unmarshal([]byte(out), &in) != nil || !in.Verified {
		t.Errorf("inspect with the key on stdin: %d %s %s", code, out, errOut)
	}
	if _, errOut, code := execBackup(t, testBackup(t, id.Recipient().String()), "backup", "inspect", "-", "--identity", "-"); code == 0 || !strings.Contains(errOut, "where the backup already comes from") {
		t.Errorf("key and backup both on stdin: %d %s", code, errOut)
	}
	// Without the key, an encrypted backup's framing is still checked.
	damaged := testBackup(t, id.Recipient().String())
	damaged[len(damaged)/2] ^= 1
	if _, errOut, code := execBackup(t, damaged, "backup", "inspect", "-", "--signing-key", testSigningKey()); code == 0 || !strings.Contains(errOut, "backup is corrupt (payload): chunk") {
		t.Errorf("a damaged encrypted backup inspected without its key: %d %s", code, errOut)
	}
}

// TestBackupSignatureFlags: away from a master, a backup is checked
// against the key --signing-key gives; without one, or with another, it
// is refused and the refusal says what to do.
func TestBackupSignatureFlags(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "a.anvilbak")
	os.WriteFile(plain, testBackup(t), 0o600)
	other := envelope.FormatSigningKey(envelopetest.SigningKey(2).Public().(ed25519.PublicKey))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "inspect", plain}, "give the cluster's key (backup.signingPublicKey in the cluster file, or --signing-key)"},
		{[]string{"backup", "inspect", plain, "--signing-key", other}, "backup is not signed by this cluster"},
		{[]string{"backup", "export-snapshot", plain, "-o", filepath.Join(dir, "db"), "--signing-key", other}, "backup is not signed by this cluster"},
		{[]string{"backup", "export-files", plain, "--root", filepath.Join(dir, "root"), "--signing-key", other}, "backup is not signed by this cluster"},
		{[]string{"backup", "inspect", plain, "--signing-key", "ed25519:nope"}, `backup signing key "ed25519:nope"`},
	} {
		if _, errOut, code := execBackup(t, nil, tc.args...); code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("anvil %s: exit %d, want a refusal saying %q:\n%s", strings.Join(tc.args, " "), code, tc.want, errOut)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("refused reads wrote %v", ents)
	}
}
