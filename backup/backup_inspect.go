package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// Inspection is what `anvil backup inspect` reports.
type Inspection struct {
	Header envelope.BackupHeader `json:"header"`
	// Verified says the whole backup was read and every check passed;
	// Contents is then what it holds.
	Verified bool                       `json:"verified"`
	Contents *envelope.EnvelopeContents `json:"contents,omitempty"`
	// Unverified says why the content was not checked (an encrypted backup
	// without its identity).
	Unverified string `json:"unverified,omitempty"`
}

// Keys are what reading a backup takes: the age identities that decrypt
// it, and whose signature it must carry.
type Keys struct {
	Identities []age.Identity
	Trust      envelope.Trust
}

// InspectBackup reads the whole backup in r, writing nothing, and checks
// what it can (VerifyBackup): its signature always, then every layer when
// it is not encrypted or the identity is given; else the clear header and
// the payload's framing. A damaged or forged backup is an error; an
// encrypted one without identity is not.
func InspectBackup(r io.ReadSeeker, k Keys) (*Inspection, error) {
	v, err := envelope.VerifyBackup(r, k.Identities, k.Trust)
	if err != nil {
		return nil, err
	}
	if v.Contents == nil {
		return &Inspection{Header: v.Header, Unverified: "encrypted: only the header, the signature and the payload's framing (chunk CRCs, its end) were checked; pass its age identity (--identity) to verify the content"}, nil
	}
	return &Inspection{Header: v.Header, Verified: true, Contents: v.Contents}, nil
}

// ExportSnapshot writes the etcd snapshot inside the backup in r to file
// (mode 0600), exactly as etcd's maintenance API streamed it, so stock etcd
// tools (etcdutl snapshot restore) read it. The file appears only once the
// whole backup has been verified.
func ExportSnapshot(r io.ReadSeeker, k Keys, file string) (*envelope.EnvelopeContents, error) {
	pr, pw := io.Pipe()
	type result struct {
		c   *envelope.EnvelopeContents
		err error
	}
	done := make(chan result, 1)
	trailer := envelope.NewSnapshotTrailer()
	go func() {
		c, err := envelope.ReadEnvelope(r, envelope.ReadOptions{Identities: k.Identities, Trust: k.Trust, Snapshot: io.MultiWriter(pw, trailer)})
		if err == nil {
			if terr := trailer.Check(); terr != nil {
				err = envelope.NewError(envelope.ErrCorruptBackup, "snapshot", "%v", terr)
			}
		}
		// Only a verified read closes the pipe cleanly, and only then does
		// WriteFrom rename its temporary file into place.
		pw.CloseWithError(err)
		done <- result{c, err}
	}()
	werr := fsutil.WriteFrom(file, pr, 0o600, 0o700)
	pr.CloseWithError(errors.Join(werr, io.ErrClosedPipe))
	res := <-done
	if res.err != nil {
		return nil, res.err
	}
	if werr != nil {
		return nil, fmt.Errorf("export snapshot: %w", werr)
	}
	return res.c, nil
}

// ExportedFile is one file ExportFiles put in place.
type ExportedFile struct {
	Path    string `json:"path"`
	Outcome string `json:"outcome"` // created, updated or unchanged
}

// ErrFileDiffers marks an existing file that ExportFiles would replace.
var ErrFileDiffers = errors.New("exists with other content")

// ExportFiles puts the files a backup carries (the CAs and their keys, the
// service-account key pair, the Secrets encryption config, the cluster
// file) at their host paths under root: on a new or reset machine, what
// `anvil init` then builds the master from, so that the backup restores
// onto it with no secret that was not in the backup.
//
// Everything is checked before anything is written: the whole backup (an
// encrypted one needs its identity), that it holds exactly BackupFiles —
// a record for any other path is refused, since export-files runs as root
// and would otherwise write whatever a crafted backup names — and that
// its cluster CA is the one its header names. Files are written with the
// mode anvil gives them (carriedFileMode), never the recorded ones, each
// staged beside its destination and renamed into place only once all are
// staged. An existing file with other content is refused unless force.
func ExportFiles(r io.ReadSeeker, k Keys, root hostfs.Root, force bool) ([]ExportedFile, error) {
	files := map[string][]byte{}
	trailer := envelope.NewSnapshotTrailer()
	c, err := envelope.ReadEnvelope(r, envelope.ReadOptions{
		Identities: k.Identities,
		Trust:      k.Trust,
		File: func(p string, _ fs.FileMode, data []byte) error {
			files["/"+p] = data
			return nil
		},
		Snapshot: trailer,
	})
	if err != nil {
		return nil, err
	}
	if err := trailer.Check(); err != nil {
		return nil, envelope.NewError(envelope.ErrCorruptBackup, "snapshot", "%v", err)
	}
	if err := checkCarriedFiles(files, &c.Header); err != nil {
		return nil, err
	}
	var (
		differ []string
		writes []stagedWrite
		out    []ExportedFile
	)
	for _, p := range wantedFiles(&c.Header) {
		dst, mode := root.Path(p), carriedFileMode
		outcome := fsutil.Created
		have, err := os.ReadFile(dst)
		switch {
		case err == nil && !bytes.Equal(have, files[p]):
			differ = append(differ, dst)
			outcome = fsutil.Updated
		case err == nil:
			fi, err := os.Stat(dst)
			if err != nil {
				return nil, err
			}
			if fi.Mode().Perm() == mode {
				out = append(out, ExportedFile{Path: dst, Outcome: fsutil.Unchanged.String()})
				continue
			}
			outcome = fsutil.Updated
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
		writes = append(writes, stagedWrite{path: dst, data: files[p], mode: mode})
		out = append(out, ExportedFile{Path: dst, Outcome: outcome.String()})
	}
	if len(differ) > 0 && !force {
		return nil, fmt.Errorf("%s %w: this machine has keys of its own (anvil reset removes them, --force replaces them)", strings.Join(differ, ", "), ErrFileDiffers)
	}
	if err := writeAllOrNothing(writes); err != nil {
		return nil, err
	}
	return out, nil
}

// stagedWrite is one file writeAllOrNothing puts in place.
type stagedWrite struct {
	path string
	data []byte
	mode fs.FileMode
	tmp  string
}

// writeAllOrNothing writes every file to a temporary file beside its
// destination first, and renames them into place only when all were
// written: a full disk or a read-only directory leaves none of them.
func writeAllOrNothing(ws []stagedWrite) (err error) {
	defer func() {
		if err != nil {
			for _, w := range ws {
				if w.tmp != "" {
					os.Remove(w.tmp)
				}
			}
		}
	}()
	for i := range ws {
		w := &ws[i]
		dir := filepath.Dir(w.path)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create directory %s: %w", dir, err)
		}
		f, err := os.CreateTemp(dir, "."+filepath.Base(w.path)+".tmp-*")
		if err != nil {
			return fmt.Errorf("write %s: %w", w.path, err)
		}
		w.tmp = f.Name()
		_, err = f.Write(w.data)
		err = errors.Join(err, f.Chmod(w.mode), f.Sync(), f.Close())
		if err != nil {
			return fmt.Errorf("write %s: %w", w.path, err)
		}
	}
	for i := range ws {
		if err := os.Rename(ws[i].tmp, ws[i].path); err != nil {
			return fmt.Errorf("write %s: %w", ws[i].path, err)
		}
		ws[i].tmp = ""
	}
	return nil
}
