package backup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"anvil.dev/anvil/backup/envelope"
)

// BackupEntry is one backup file in a backup directory.
type BackupEntry struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	// Header is nil when the file's header cannot be read; Problem says why.
	Header  *envelope.BackupHeader `json:"header,omitempty"`
	Problem string                 `json:"problem,omitempty"`
}

// Created is when the backup was taken (the file's time for an unreadable
// one).
func (e BackupEntry) Created(fallback time.Time) time.Time {
	if e.Header != nil {
		return e.Header.Created
	}
	return fallback
}

// ListBackups reads the header of every *.anvilbak file in dir, newest
// first. It reads headers only, so it is quick however big the backups;
// a file whose header is bad is listed last, with its problem. A missing
// directory has no backups.
func ListBackups(dir string) ([]BackupEntry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []BackupEntry{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []BackupEntry{}
	mtimes := map[string]time.Time{}
	for _, de := range des {
		name := de.Name()
		// Hidden names are fsutil's temporary files of a backup being written.
		if !de.Type().IsRegular() || !strings.HasSuffix(name, BackupFileExt) || strings.HasPrefix(name, ".") {
			continue
		}
		p := filepath.Join(dir, name)
		e := BackupEntry{Path: p}
		fi, err := de.Info()
		if err != nil {
			continue // removed while listing
		}
		e.Size, mtimes[p] = fi.Size(), fi.ModTime()
		if h, err := readHeaderFile(p); err != nil {
			e.Problem = err.Error()
		} else {
			e.Header = h
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b BackupEntry) int {
		// Unreadable files last.
		if (a.Header == nil) != (b.Header == nil) {
			if a.Header == nil {
				return 1
			}
			return -1
		}
		if c := b.Created(mtimes[b.Path]).Compare(a.Created(mtimes[a.Path])); c != 0 {
			return c
		}
		return strings.Compare(b.Path, a.Path)
	})
	return out, nil
}

func readHeaderFile(p string) (*envelope.BackupHeader, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return envelope.ReadBackupHeader(bufio.NewReaderSize(f, 4096))
}

// PruneOptions say which backups PruneBackups may remove.
type PruneOptions struct {
	// Cluster limits pruning to this cluster's backups.
	Cluster string
	// Keep is how many of the newest backups stay.
	Keep int
	// Manual includes backups taken by hand; by default only scheduled
	// ones are counted and removed (backup.retain is about the timer's).
	Manual bool
	// DryRun lists what would be removed and removes nothing.
	DryRun bool
}

// PruneBackups removes all but the Keep newest of the cluster's backups in
// dir, oldest first, and returns what it removed. It never touches a file
// whose header it cannot read, another cluster's backup, or a file that
// is not a backup.
func PruneBackups(dir string, o PruneOptions) ([]BackupEntry, error) {
	if o.Keep < 0 {
		return nil, fmt.Errorf("prune: keep %d is negative", o.Keep)
	}
	all, err := ListBackups(dir)
	if err != nil {
		return nil, err
	}
	var cand []BackupEntry
	for _, e := range all {
		if e.Header == nil || (o.Cluster != "" && e.Header.Cluster != o.Cluster) {
			continue
		}
		if e.Header.Trigger == envelope.TriggerScheduled || o.Manual {
			cand = append(cand, e)
		}
	}
	if len(cand) <= o.Keep {
		return []BackupEntry{}, nil
	}
	drop := cand[o.Keep:]
	slices.Reverse(drop) // oldest first
	removed := []BackupEntry{}
	var errs []error
	for _, e := range drop {
		if !o.DryRun {
			if err := os.Remove(e.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
		}
		removed = append(removed, e)
	}
	return removed, errors.Join(errs...)
}
