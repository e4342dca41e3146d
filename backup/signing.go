package backup

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// signingKey reads this master's backup signing key (pki's
// backup-signing.key) and checks it against the cluster file's pin.
func signingKey(root hostfs.Root, c *v1alpha1.Cluster) (ed25519.PrivateKey, error) {
	file := root.Join(hostfs.PKIDir, pki.BackupSigningKeyName)
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("this master has no backup signing key (%s): anvil init and join make it, and every master "+
			"must hold the same one; copy it (with %s) from the master that has it", file, pki.BackupSigningPubKeyName)
	}
	if err != nil {
		return nil, fmt.Errorf("backup signing key: %w", err)
	}
	k, err := pki.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("backup signing key %s: %w", file, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("backup signing key %s is a %T, not an ed25519 key", file, k)
	}
	pub := envelope.FormatSigningKey(key.Public().(ed25519.PublicKey))
	if pin := c.Backup.SigningPublicKey; pin != "" && pin != pub {
		return nil, fmt.Errorf("this master's backup signing key (%s, %s) is not the one the cluster file pins in backup.signingPublicKey (%s): "+
			"its backups would be refused; put the cluster's key back, or pin this one", file, pub, pin)
	}
	return key, nil
}

// SigningPublicKey is the public half of this master's backup signing key
// (backup-signing.pub) in its text form, ed25519:….
func SigningPublicKey(root hostfs.Root) (string, error) {
	pub, err := pki.ReadBackupSigningPublicKey(root.PKI())
	if err != nil {
		return "", err
	}
	return envelope.FormatSigningKey(pub), nil
}

// LocalTrust is whose backups this machine accepts: the keys given
// (--signing-key), this master's own signing key when it has one, and the
// key its cluster file pins. allowUnsigned accepts format-1 backups too.
// With no key at all, reading a signed backup fails with
// envelope.ErrNoTrust, which says how to give one.
func LocalTrust(root hostfs.Root, keys []string, allowUnsigned bool) (envelope.Trust, error) {
	all := slices.Clone(keys)
	if pub, err := SigningPublicKey(root); err == nil {
		all = append(all, pub)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return envelope.Trust{}, err
	}
	c, _, err := v1alpha1.Load(root.Path(master.ClusterFile))
	switch {
	case err == nil && c.Backup.SigningPublicKey != "":
		all = append(all, c.Backup.SigningPublicKey)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return envelope.Trust{}, err
	}
	slices.Sort(all)
	t, err := envelope.TrustKeys(slices.Compact(all)...)
	if err != nil {
		return envelope.Trust{}, err
	}
	t.AllowUnsigned = allowUnsigned
	return t, nil
}
