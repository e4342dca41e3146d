package agekey

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestEnsure(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sub", "backup.key")
	r1, created, err := Ensure(file)
	if err != nil || !created {
		t.Fatalf("first Ensure: %v created=%v", err, created)
	}
	if _, err := age.ParseX25519Recipient(r1); err != nil {
		t.Fatalf("recipient %q: %v", r1, err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want 0600", fi, err)
	}
	r2, created, err := Ensure(file)
	if err != nil || created || r2 != r1 {
		t.Fatalf("second Ensure: %q %v %v, want the same key kept", r2, created, err)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Ensure(file); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("a key readable by others: %v", err)
	}
}
