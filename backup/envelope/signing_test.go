package envelope_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"strings"
	"testing"

	"filippo.io/age"

	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/backup/envelope/envelopetest"
)

// countingIdentity records whether anything tried to open the body.
type countingIdentity struct {
	id    age.Identity
	calls *int
}

func (c countingIdentity) Unwrap(s []*age.Stanza) ([]byte, error) {
	*c.calls++
	return c.id.Unwrap(s)
}

// TestEnvelopeSignature plays the forger: someone without the cluster's
// signing key writes a backup encrypted to the cluster's recipient (its
// public key is in every backup's header). Every way of doing so is
// refused, and the body is never decrypted on the way.
func TestEnvelopeSignature(t *testing.T) {
	clusterID := envelopetest.NewIdentity(t)
	recipients := []string{clusterID.Recipient().String()}
	snapshot := etcdSnapshot(2)
	genuine := buildEnvelope(t, testHeader(), recipients, snapshot)
	forgerKey := envelopetest.SigningKey(66)
	forged := envelopetest.Craft(t, testHeader(), recipients, forgerKey, nil, snapshot)
	// The forger names the cluster's key in the header and signs with
	// their own: the header check passes, the signature does not.
	claimed := envelopetest.Resign(envelopetest.RewriteHeader(t, forged, func(h *envelope.BackupHeader) {
		h.SigningKey = envelope.FormatSigningKey(testKey().Public().(ed25519.PublicKey))
	}), forgerKey)
	// The genuine backup with its clear header edited afterwards.
	edited := envelopetest.RewriteHeader(t, genuine, func(h *envelope.BackupHeader) { h.Revision = 1 })
	// Another cluster's genuine backup.
	other := envelopetest.Craft(t, testHeader(), recipients, envelopetest.SigningKey(2), nil, snapshot)

	for _, tc := range []struct {
		name   string
		b      []byte
		trust  envelope.Trust
		want   error
		detail string
	}{
		{"signed by the forger's key", forged, testTrust(), envelope.ErrUntrusted, "this cluster's backups are signed by"},
		{"naming the cluster's key, signed by another", claimed, testTrust(), envelope.ErrUntrusted, "does not verify"},
		{"clear header edited", edited, testTrust(), envelope.ErrUntrusted, "does not verify"},
		{"another cluster's", other, testTrust(), envelope.ErrUntrusted, "another cluster's backup, or forged"},
		{"no key to check with", genuine, envelope.Trust{}, envelope.ErrNoTrust, "backup.signingPublicKey"},
		{"no key, unsigned allowed", genuine, envelope.Trust{AllowUnsigned: true}, envelope.ErrNoTrust, "--signing-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			ids := []age.Identity{countingIdentity{clusterID, &calls}}
			_, err := envelope.ReadEnvelope(bytes.NewReader(tc.b), envelope.ReadOptions{Identities: ids, Trust: tc.trust,
				File: func(string, os.FileMode, []byte) error {
					t.Error("a file of an untrusted backup was handed out")
					return nil
				}})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.detail) {
				t.Errorf("ReadEnvelope: %v, want %v saying %q", err, tc.want, tc.detail)
			}
			if _, err := envelope.VerifyBackup(bytes.NewReader(tc.b), ids, tc.trust); !errors.Is(err, tc.want) {
				t.Errorf("VerifyBackup: %v, want %v", err, tc.want)
			}
			if _, err := envelope.VerifyBackup(bytes.NewReader(tc.b), nil, tc.trust); !errors.Is(err, tc.want) {
				t.Errorf("VerifyBackup without the identity: %v, want %v", err, tc.want)
			}
			if calls != 0 {
				t.Errorf("the body of an untrusted backup was decrypted (%d tries)", calls)
			}
		})
	}
	// The genuine one reads with the cluster's key among others.
	trust := testTrust()
	trust.Keys = append([]ed25519.PublicKey{envelopetest.SigningKey(9).Public().(ed25519.PublicKey)}, trust.Keys...)
	if _, err := envelope.VerifyBackup(bytes.NewReader(genuine), []age.Identity{clusterID}, trust); err != nil {
		t.Errorf("the genuine backup: %v", err)
	}
}

// TestEnvelopeFormat1 reads a backup written by anvil before backups were
// signed (testdata/format1.anvilbak, plain, made by buildEnvelope of that
// anvil): refused unless unsigned backups are allowed, read when they are.
func TestEnvelopeFormat1(t *testing.T) {
	b, err := os.ReadFile("testdata/format1.anvilbak")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envelope.VerifyBackup(bytes.NewReader(b), nil, testTrust()); !errors.Is(err, envelope.ErrUnsigned) || !strings.Contains(err.Error(), "--allow-unsigned") {
		t.Errorf("format 1 without AllowUnsigned: %v, want ErrUnsigned naming --allow-unsigned", err)
	}
	v, err := envelope.VerifyBackup(bytes.NewReader(b), nil, envelope.Trust{AllowUnsigned: true})
	if err != nil || v.Contents == nil || v.Header.SigningKey != "" || len(v.Contents.Files) != len(testFiles()) {
		t.Fatalf("format 1 with AllowUnsigned: %+v %v", v, err)
	}
	// A format-2 backup cut down to look like format 1 (signature and
	// signing key dropped, version 1) is caught by the header copy.
	genuine := buildEnvelope(t, testHeader(), nil, etcdSnapshot(1))
	down := envelopetest.RewriteHeader(t, genuine[:len(genuine)-envelope.SignatureSize], func(h *envelope.BackupHeader) { h.SigningKey = "" })
	down[9] = 1
	n := binary.BigEndian.Uint32(down[10:14])
	binary.BigEndian.PutUint32(down[14+n:], crc32.Checksum(down[:14+n], crc32.MakeTable(crc32.Castagnoli)))
	if h, err := envelope.ReadBackupHeader(bytes.NewReader(down)); err != nil || h.SigningKey != "" {
		t.Fatalf("the downgraded header itself: %+v %v", h, err)
	}
	if _, err := envelope.VerifyBackup(bytes.NewReader(down), nil, envelope.Trust{AllowUnsigned: true}); !errors.Is(err, envelope.ErrCorruptBackup) || !strings.Contains(err.Error(), "changed") {
		t.Errorf("a format-2 backup passed off as format 1: %v, want corrupt", err)
	}
}
