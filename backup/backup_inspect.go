package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
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

// InspectBackup reads the whole backup in r, writing nothing, and checks
// what it can (VerifyBackup): every layer when it is not encrypted or the
// identity is given; else the clear header and the payload's framing. A
// damaged backup is an error; an encrypted one without identity is not.
func InspectBackup(r io.Reader, ids []age.Identity) (*Inspection, error) {
	v, err := envelope.VerifyBackup(r, ids)
	if err != nil {
		return nil, err
	}
	if v.Contents == nil {
		return &Inspection{Header: v.Header, Unverified: "encrypted: only the header and the payload's framing (chunk CRCs, its end) were checked; pass its age identity (--identity) to verify the content"}, nil
	}
	return &Inspection{Header: v.Header, Verified: true, Contents: v.Contents}, nil
}

// ExportSnapshot writes the etcd snapshot inside the backup in r to file
// (mode 0600), exactly as etcd's maintenance API streamed it, so stock etcd
// tools (etcdutl snapshot restore) read it. The file appears only once the
// whole backup has been verified.
func ExportSnapshot(r io.Reader, ids []age.Identity, file string) (*envelope.EnvelopeContents, error) {
	pr, pw := io.Pipe()
	type result struct {
		c   *envelope.EnvelopeContents
		err error
	}
	done := make(chan result, 1)
	trailer := envelope.NewSnapshotTrailer()
	go func() {
		c, err := envelope.ReadEnvelope(r, envelope.ReadOptions{Identities: ids, Snapshot: io.MultiWriter(pw, trailer)})
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
// file) at their host paths under root, with their modes: on a new or
// reset machine, what `anvil init` then builds the master from, so that
// the backup restores onto it with no secret that was not in the backup.
// The whole backup is verified first (an encrypted one needs its
// identity); nothing is written unless every file can be. An existing file
// with other content is refused unless force.
func ExportFiles(r io.Reader, ids []age.Identity, root hostfs.Root, force bool) ([]ExportedFile, error) {
	type file struct {
		path string
		mode fs.FileMode
		data []byte
	}
	var files []file
	trailer := envelope.NewSnapshotTrailer()
	_, err := envelope.ReadEnvelope(r, envelope.ReadOptions{
		Identities: ids,
		File: func(p string, mode fs.FileMode, data []byte) error {
			files = append(files, file{"/" + p, mode, data})
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
	for _, want := range BackupFiles() {
		if !slices.ContainsFunc(files, func(f file) bool { return f.path == want }) {
			return nil, envelope.NewError(envelope.ErrCorruptBackup, "file", "%s is missing", want)
		}
	}
	var differ []string
	for _, f := range files {
		have, err := os.ReadFile(root.Path(f.path))
		if err == nil && !bytes.Equal(have, f.data) {
			differ = append(differ, root.Path(f.path))
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if len(differ) > 0 && !force {
		return nil, fmt.Errorf("%s %w: this machine has keys of its own (anvil reset removes them, --force replaces them)", strings.Join(differ, ", "), ErrFileDiffers)
	}
	var out []ExportedFile
	for _, f := range files {
		o, err := fsutil.EnsureFile(root.Path(f.path), f.data, f.mode, 0o700)
		if err != nil {
			return out, err
		}
		out = append(out, ExportedFile{Path: root.Path(f.path), Outcome: o.String()})
	}
	return out, nil
}
