package agekey

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"filippo.io/age"

	"anvil.dev/anvil/internal/fsutil"
)

// Ensure returns the recipient of the age identity in file, writing a new
// identity there (0600, atomically; its directory 0700) when the file does
// not exist. An existing file is kept: it must hold exactly one X25519
// identity and be readable by its owner only.
func Ensure(file string) (recipient string, created bool, err error) {
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		id, err := age.GenerateX25519Identity()
		if err != nil {
			return "", false, err
		}
		var out bytes.Buffer
		fmt.Fprintf(&out, "# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
		if err := fsutil.WriteFile(file, out.Bytes(), 0o600, 0o700); err != nil {
			return "", false, fmt.Errorf("backup key: %w", err)
		}
		return id.Recipient().String(), true, nil
	case err != nil:
		return "", false, fmt.Errorf("backup key: %w", err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return "", false, fmt.Errorf("backup key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", false, fmt.Errorf("backup key %s is readable by others (mode %v): chmod 600 %s", file, fi.Mode().Perm(), file)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		return "", false, fmt.Errorf("backup key %s: %w", file, err)
	}
	x, ok := ids[0].(*age.X25519Identity)
	if len(ids) != 1 || !ok {
		return "", false, fmt.Errorf("backup key %s: want one age X25519 identity, found %d identities", file, len(ids))
	}
	return x.Recipient().String(), false, nil
}
