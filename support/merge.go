package support

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// UnreachableFile is the top-level file of a cluster's bundle naming the
// hosts whose section is missing, each with why.
const UnreachableFile = "unreachable.txt"

// maxEntryBytes bounds one file read from a host's stream.
const maxEntryBytes = 1 << 30

// Bundle is a cluster's support bundle as it is written: a directory per
// host (what Collect made there), the cluster's Nodes and events at the
// top (cluster/), and unreachable.txt.
type Bundle struct {
	gz      *gzip.Writer
	tw      *tar.Writer
	now     time.Time
	cluster bool
	files   []string
}

// NewBundle starts a cluster's bundle on w.
func NewBundle(w io.Writer, now time.Time) *Bundle {
	gz := gzip.NewWriter(w)
	return &Bundle{gz: gz, tw: tar.NewWriter(gz), now: now}
}

// AddHost copies one host's bundle (a tar.gz from Collect) under host/,
// redacting every file again: the host's anvil may be older than this one.
// Its cluster/ goes to the top, unless a host added before had one.
func (b *Bundle) AddHost(host string, r io.Reader) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%s's bundle: %w", host, err)
	}
	tr := tar.NewReader(gz)
	hadCluster := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s's bundle: %w", host, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		// The host's own top directory is replaced by the name the
		// cluster file gives it.
		top, rel, ok := strings.Cut(path.Clean(hdr.Name), "/")
		if !ok || top == "" || top == ".." || rel == "" || strings.HasPrefix(rel, "../") || rel == ".." || path.IsAbs(rel) {
			return fmt.Errorf("%s's bundle: unexpected entry %q", host, hdr.Name)
		}
		data, err := io.ReadAll(io.LimitReader(tr, maxEntryBytes))
		if err != nil {
			return fmt.Errorf("%s's bundle: %s: %w", host, hdr.Name, err)
		}
		name := path.Join(host, rel)
		if strings.HasPrefix(rel, "cluster/") {
			if b.cluster {
				continue
			}
			hadCluster = true
			name = rel
		}
		if err := b.AddFile(name, data); err != nil {
			return err
		}
	}
	b.cluster = b.cluster || hadCluster
	return nil
}

// AddFile adds one file, redacted.
func (b *Bundle) AddFile(name string, data []byte) error {
	data = Redact(data)
	if err := b.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: b.now, Typeflag: tar.TypeReg}); err != nil {
		return writeError{err}
	}
	if _, err := b.tw.Write(data); err != nil {
		return writeError{err}
	}
	b.files = append(b.files, name)
	return nil
}

// Files are the bundle's files so far, in order.
func (b *Bundle) Files() []string { return b.files }

// Close ends the archive.
func (b *Bundle) Close() error {
	if err := b.tw.Close(); err != nil {
		return writeError{err}
	}
	if err := b.gz.Close(); err != nil {
		return writeError{err}
	}
	return nil
}
