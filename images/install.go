package images

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// InstallOptions copies a build (OutDir/<version>) onto a host.
type InstallOptions struct {
	// From is the build directory holding the files and their payload
	// (or, for a build from before the node stack, manifest.json).
	From string
	// Role, when set, installs only the files a host of that role needs
	// (Manifest.ForRole); empty installs everything the build holds.
	Role v1alpha1.Role
	// Anvil, when set, is installed beside the components.
	Anvil string
	Root  hostfs.Root
}

// Install verifies the files of the build in From that the host needs
// against the build's payload, copies them into a staging directory,
// verifies the copies, writes their manifest there, and swaps the staging
// directory in as <root>/opt/anvil/bin/<version>: binaries at the top,
// CNI plugins in cni/, image archives in images/. When the installed
// version already matches, nothing is copied.
func Install(o InstallOptions) (*Manifest, error) {
	m, err := ReadPayload(o.From)
	if err != nil {
		return nil, err
	}
	if _, err := Lookup(m.KubernetesVersion); err != nil {
		return nil, err
	}
	want := &Manifest{KubernetesVersion: m.KubernetesVersion, EtcdVersion: m.EtcdVersion, GoVersion: m.GoVersion, InputHash: m.InputHash, Builds: m.Builds, Files: append([]File(nil), m.Files...)}
	if o.Role != "" {
		if want, err = m.Subset(o.Role); err != nil {
			return nil, err
		}
	}
	if err := want.Verify(o.From); err != nil {
		return nil, fmt.Errorf("refusing to install: %w", err)
	}
	if o.Anvil != "" {
		sum, size, err := HashFile(o.Anvil)
		if err != nil {
			return nil, err
		}
		want.Files = append(want.Files, File{Name: AnvilBinary, SHA256: sum, Size: size})
	}
	dst := o.Root.Bin(m.KubernetesVersion)
	if cur, err := ReadManifest(dst); err == nil && sameFiles(cur, want) && cur.Verify(dst) == nil {
		return cur, nil
	}
	binRoot := o.Root.Path(hostfs.BinDir)
	if err := os.MkdirAll(binRoot, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", binRoot, err)
	}
	stage, err := os.MkdirTemp(binRoot, ".install-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	if err := os.Chmod(stage, 0o755); err != nil {
		return nil, err
	}
	for _, f := range want.Files {
		src := filepath.Join(o.From, filepath.FromSlash(f.Name))
		if f.Name == AnvilBinary {
			src = o.Anvil
		}
		dst := filepath.Join(stage, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", filepath.Dir(dst), err)
		}
		if err := copyFile(src, dst, fileMode(f.Name)); err != nil {
			return nil, err
		}
	}
	if err := want.Verify(stage); err != nil {
		return nil, fmt.Errorf("copy changed under us: %w", err)
	}
	if err := WriteManifest(stage, want); err != nil {
		return nil, err
	}
	if err := swapDir(stage, dst); err != nil {
		return nil, err
	}
	return want, nil
}

// Installed returns the manifest of the version installed under root after
// checking every binary against it: what `anvil init` runs is exactly what
// was built.
func Installed(root hostfs.Root, version string) (*Manifest, string, error) {
	if _, err := Lookup(version); err != nil {
		return nil, "", err
	}
	dir := root.Bin(version)
	m, err := ReadManifest(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, dir, &MissingError{Path: filepath.Join(dir, ManifestFile)}
	}
	if err != nil {
		return nil, dir, err
	}
	if m.KubernetesVersion != version {
		return nil, dir, fmt.Errorf("%s describes kubernetes %s, not %s", filepath.Join(dir, ManifestFile), m.KubernetesVersion, version)
	}
	if err := m.Verify(dir); err != nil {
		return nil, dir, err
	}
	return m, dir, nil
}

func sameFiles(a, b *Manifest) bool {
	if a.KubernetesVersion != b.KubernetesVersion || len(a.Files) != len(b.Files) {
		return false
	}
	if a.Role != b.Role {
		return false
	}
	for i := range a.Files {
		if a.Files[i] != b.Files[i] {
			return false
		}
	}
	return true
}

// fileMode is an installed file's mode: image archives are data, the rest
// are programs.
func fileMode(name string) os.FileMode {
	if strings.HasPrefix(name, ImagesSubdir+"/") {
		return 0o644
	}
	return 0o755
}

// copyFile copies src to dst: a reflink (a copy-on-write clone, free on
// btrfs and xfs) when the file system can, else the bytes. Never a hard
// link: a later write to the source must not change the copy.
func copyFile(src, dst string, mode os.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode); err == nil {
		cloneErr := unix.IoctlFileClone(int(out.Fd()), int(f.Fd()))
		closeErr := out.Close()
		if cloneErr == nil && closeErr == nil {
			return os.Chmod(dst, mode)
		}
		os.Remove(dst)
	}
	return fsutil.WriteFrom(dst, f, mode, 0o755)
}
