package images

import (
	"errors"
	"io/fs"
	"os"
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
	// Version is the Kubernetes release the file belongs to.
	Version string `json:"version"`
	// Component is the file's name in the version directory (cni/bridge,
	// images/pause.tar for the CNI plugins and image archives).
	Component string `json:"component"`
	// Build and BuildVersion say what made it, e.g. containerd v2.4.2.
	Build        string `json:"build"`
	BuildVersion string `json:"buildVersion,omitempty"`
	Set          Set    `json:"set"`
	// Image is the reference an image archive holds.
	Image  string `json:"image,omitempty"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256,omitempty"`
	// Expected is the manifest's sha256 when it differs from SHA256.
	Expected string `json:"expectedSHA256,omitempty"`
	Size     int64  `json:"size,omitempty"`
	State    State  `json:"state"`
}

// List reports, for every supported version and every directory in dirs
// (each holding <version>/ subdirectories: build trees or installed trees),
// the state of each file the release builds. An installed tree whose
// manifest was made for one role (Manifest.Role) lists that role's files.
// An older release is listed only where its directory exists: it is built
// or installed for an upgrade, not by default.
func List(dirs []string) []Entry {
	var out []Entry
	for _, rel := range Releases() {
		for _, d := range dirs {
			if rel.Version != DefaultVersion {
				if _, err := os.Stat(filepath.Join(d, rel.Version)); err != nil {
					continue
				}
			}
			out = append(out, listDir(rel, filepath.Join(d, rel.Version))...)
		}
	}
	return out
}

func listDir(rel Release, dir string) []Entry {
	m, merr := ReadPayload(dir)
	var out []Entry
	for _, s := range rel.builds() {
		if merr == nil && m.Role != "" && !s.Set.Needs(m.Role) {
			continue
		}
		for _, name := range s.outputs() {
			e := Entry{Version: rel.Version, Component: name, Build: s.Name, BuildVersion: s.Version, Set: s.Set,
				Path: filepath.Join(dir, filepath.FromSlash(name))}
			if s.Image != nil {
				e.Image = s.Image.Ref
			}
			var f File
			listed := false
			if merr == nil {
				f, listed = m.File(name)
			}
			if listed && f.Image != "" {
				e.Image = f.Image
			}
			if merr == nil && e.BuildVersion == "" {
				for _, b := range m.Builds {
					if b.Name == s.Name {
						e.BuildVersion = b.Version
					}
				}
			}
			sum, size, err := HashFile(e.Path)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				e.State = StateMissing
			case err != nil:
				e.State = StateMissing
			default:
				e.SHA256, e.Size = sum, size
				e.State = StateUnverified
				if listed {
					e.State = StatePresent
					if f.SHA256 != sum {
						e.State, e.Expected = StateMismatch, f.SHA256
					}
				}
			}
			out = append(out, e)
		}
	}
	return out
}
