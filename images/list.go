package images

import (
	"errors"
	"io/fs"
	"path/filepath"
)

// State says whether a component's binary is usable.
type State string

const (
	StatePresent  State = "present"
	StateMissing  State = "missing"
	StateMismatch State = "mismatch"
	// StateUnverified means a binary exists but no manifest vouches for it.
	StateUnverified State = "unverified"
)

// Entry is one row of `anvil images list`.
type Entry struct {
	Version   string `json:"version"`
	Component string `json:"component"`
	Path      string `json:"path"`
	SHA256    string `json:"sha256,omitempty"`
	// Expected is the manifest's sha256 when it differs from SHA256.
	Expected string `json:"expectedSHA256,omitempty"`
	Size     int64  `json:"size,omitempty"`
	State    State  `json:"state"`
}

// List reports, for every supported version and every directory in dirs
// (each holding <version>/ subdirectories), the state of each component.
func List(dirs []string) []Entry {
	var out []Entry
	for _, rel := range Releases() {
		for _, d := range dirs {
			out = append(out, listDir(rel, filepath.Join(d, rel.Version))...)
		}
	}
	return out
}

func listDir(rel Release, dir string) []Entry {
	m, merr := ReadManifest(dir)
	var out []Entry
	for _, c := range rel.Components {
		e := Entry{Version: rel.Version, Component: c, Path: filepath.Join(dir, c)}
		sum, size, err := HashFile(e.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			e.State = StateMissing
		case err != nil:
			e.State = StateMissing
		default:
			e.SHA256, e.Size = sum, size
			e.State = StateUnverified
			if merr == nil {
				if f, ok := m.File(c); ok {
					e.State = StatePresent
					if f.SHA256 != sum {
						e.State, e.Expected = StateMismatch, f.SHA256
					}
				}
			}
		}
		out = append(out, e)
	}
	return out
}
