package backup

import (
	"fmt"
	"io"
	"os"

	"filippo.io/age"
)

// ArgsError is a request the command line itself got wrong: identities
// asked for in a way that cannot work (the key on stdin where the backup
// already comes from), or destinations that exclude each other.
type ArgsError struct{ Msg string }

func (e *ArgsError) Error() string { return e.Msg }

// ReadIdentities reads age identity files (age-keygen's format), or stdin
// for "-" when the backup itself does not come from stdin. A key file that
// group or others can read is refused, as ssh refuses such a private key:
// a backup's key opens the cluster's CA keys.
func ReadIdentities(files []string, stdin io.Reader, backupOnStdin bool) ([]age.Identity, error) {
	var out []age.Identity
	fromStdin := false
	for _, p := range files {
		if p == "-" {
			if backupOnStdin {
				return nil, &ArgsError{"--identity - reads the key from stdin, where the backup already comes from: give the key as a file"}
			}
			if fromStdin {
				return nil, &ArgsError{"--identity - given twice"}
			}
			fromStdin = true
			ids, err := age.ParseIdentities(stdin)
			if err != nil {
				return nil, fmt.Errorf("identity from stdin: %w", err)
			}
			out = append(out, ids...)
			continue
		}
		ids, err := readIdentityFile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, ids...)
	}
	return out, nil
}

func readIdentityFile(p string) ([]age.Identity, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", p, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity file %s is readable by others (mode %v): a backup key must be private; chmod 600 %s", p, fi.Mode().Perm(), p)
	}
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", p, err)
	}
	return ids, nil
}

// Spool copies r (a backup on stdin) into a temporary file that has no
// name (removed as soon as it is made, 0600 meanwhile) and returns it at
// its start: a backup is read twice, its signature first, and a pipe
// cannot be.
func Spool(r io.Reader) (*os.File, error) {
	f, err := os.CreateTemp("", ".anvil-backup-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("spool the backup: %w", err)
	}
	os.Remove(f.Name())
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool the backup: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
