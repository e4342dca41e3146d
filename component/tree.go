package component

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/pmezard/go-difflib/difflib"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// Modes of rendered files: only root reads them. Units, manifests and
// process specs are each a component's definition (CIS 1.1.1–1.1.8 ask 0600
// of the control plane's, 4.1.1 of the kubelet's): they hold no secret, but
// name the keys and carry configuration an attacker could learn from, and
// systemd, the kubelet and anvil's supervisor read them as root. A user
// other than root cannot `systemctl cat` anvil's units then; `systemctl
// status` asks systemd and still works. Everything under /etc/anvil is
// root's alike.
const (
	UnitMode     fs.FileMode = 0o600
	ManifestMode fs.FileMode = 0o600
	ConfigMode   fs.FileMode = 0o600
	DirMode      fs.FileMode = 0o700
)

// ProcessSpecDir holds the process layout's specs, one NAME.json each.
const ProcessSpecDir = hostfs.AnvilConfDir + "/processes"

// OutputFile is one entry of a rendered tree.
type OutputFile struct {
	// Path is the host path (absolute, as on the machine); WriteTree and
	// DiffTree resolve it under their root.
	Path string
	// Mode is the file's permission bits, with fs.ModeDir for a directory
	// that must exist (Data is then empty).
	Mode fs.FileMode
	Data []byte
	// Secret keeps DiffTree from printing the content.
	Secret bool
}

// Units renders cs as systemd units under /etc/systemd/system, in start
// order.
func Units(cs []Spec) ([]OutputFile, error) {
	return renderEach(cs, func(c Spec) (OutputFile, error) {
		b, err := SystemdUnit(c, cs)
		return OutputFile{Path: path.Join(hostfs.UnitDir, c.UnitName()), Mode: UnitMode, Data: b}, err
	})
}

// StaticPods renders cs as manifests under /etc/kubernetes/manifests, in
// start order.
func StaticPods(cs []Spec) ([]OutputFile, error) {
	return renderEach(cs, func(c Spec) (OutputFile, error) {
		b, err := StaticPodManifest(c)
		return OutputFile{Path: path.Join(hostfs.ManifestsDir, c.Name+".yaml"), Mode: ManifestMode, Data: b}, err
	})
}

// Processes renders cs as process specs under ProcessSpecDir, in start
// order.
func Processes(cs []Spec, o ProcessOptions) ([]OutputFile, error) {
	return renderEach(cs, func(c Spec) (OutputFile, error) {
		b, err := ProcessJSON(c, o)
		return OutputFile{Path: path.Join(ProcessSpecDir, c.Name+".json"), Mode: ConfigMode, Data: b}, err
	})
}

func renderEach(cs []Spec, render func(Spec) (OutputFile, error)) ([]OutputFile, error) {
	ordered, err := StartOrder(cs)
	if err != nil {
		return nil, err
	}
	out := make([]OutputFile, 0, len(ordered))
	for _, c := range ordered {
		f, err := render(c)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// StartOrder sorts cs so every component comes after the ones it requires,
// keeping the given order otherwise. A supervisor starts in this order and
// stops in the reverse.
func StartOrder(cs []Spec) ([]Spec, error) {
	out := make([]Spec, 0, len(cs))
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(c Spec, chain []string) error
	visit = func(c Spec, chain []string) error {
		switch state[c.Name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("components require each other in a cycle: %s", strings.Join(append(chain, c.Name), " → "))
		}
		state[c.Name] = 1
		for _, r := range c.Requires {
			d, ok := find(cs, r)
			if !ok {
				return fmt.Errorf("component %s: requires %s, which this node does not run", c.Name, r)
			}
			if err := visit(d, append(chain, c.Name)); err != nil {
				return err
			}
		}
		state[c.Name] = 2
		out = append(out, c)
		return nil
	}
	for i, c := range cs {
		if slices.ContainsFunc(cs[:i], func(o Spec) bool { return o.Name == c.Name }) {
			return nil, fmt.Errorf("component %s declared twice", c.Name)
		}
	}
	for _, c := range cs {
		if err := visit(c, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Written is what WriteTree did to one path.
type Written struct {
	Path    string // under the root
	Outcome fsutil.Outcome
}

// WriteTree writes files under root, atomically and only where content or
// mode differ, so a second run changes nothing. Missing directories are
// created 0700. Beneath a root other than /, a symlink leading out of the
// root is refused rather than followed (see fsutil.Root): whoever laid out
// the tree must not be able to aim anvil's writes at the machine's /etc.
func WriteTree(root hostfs.Root, files []OutputFile) ([]Written, error) {
	r, err := fsutil.OpenRoot(string(root))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []Written
	for _, f := range files {
		var o fsutil.Outcome
		var err error
		if f.Mode.IsDir() {
			o, err = r.EnsureDir(f.Path, f.Mode.Perm(), DirMode)
		} else {
			o, err = r.EnsureFile(f.Path, f.Data, f.Mode.Perm(), DirMode)
		}
		if err != nil {
			return out, err
		}
		out = append(out, Written{Path: r.Path(f.Path), Outcome: o})
	}
	return out, nil
}

// DiffTree compares files with what is under root and returns a unified
// diff of every difference (new files against /dev/null, mode changes on
// their own line). Secret files are compared but never printed. It writes
// nothing; changed is false when the tree is already in place.
func DiffTree(root hostfs.Root, files []OutputFile) (diff string, changed bool, err error) {
	r, err := fsutil.OpenRoot(string(root))
	if err != nil {
		return "", false, err
	}
	defer r.Close()
	var b strings.Builder
	for _, f := range files {
		p := r.Path(f.Path)
		fi, err := r.Stat(f.Path)
		exists := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", false, err
		}
		if f.Mode.IsDir() {
			if !exists {
				fmt.Fprintf(&b, "new directory %s (%04o)\n", p, f.Mode.Perm())
			} else if !fi.IsDir() {
				fmt.Fprintf(&b, "%s exists and is not a directory\n", p)
			}
			continue
		}
		var old []byte
		if exists {
			if old, err = r.ReadFile(f.Path); err != nil {
				return "", false, err
			}
			if fi.Mode().Perm() != f.Mode.Perm() {
				fmt.Fprintf(&b, "mode %s: %04o → %04o\n", p, fi.Mode().Perm(), f.Mode.Perm())
			}
		}
		if exists && bytes.Equal(old, f.Data) {
			continue
		}
		from := p
		if !exists {
			from = "/dev/null"
		}
		if f.Secret {
			fmt.Fprintf(&b, "secret %s differs (content not shown)\n", p)
			continue
		}
		d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A:        lines(old),
			B:        lines(f.Data),
			FromFile: from,
			ToFile:   p,
			Context:  3,
		})
		if err != nil {
			return "", false, fmt.Errorf("diff %s: %w", p, err)
		}
		b.WriteString(d)
	}
	return b.String(), b.Len() > 0, nil
}

// lines splits b after each newline, as difflib wants, without the empty
// last element a final newline leaves.
func lines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	out := strings.SplitAfter(string(b), "\n")
	if out[len(out)-1] == "" {
		out = out[:len(out)-1]
	} else {
		out[len(out)-1] += "\n"
	}
	return out
}
