package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/fsutil"
)

// ManifestFile is the name of the manifest beside the binaries it describes.
// In a build directory (bin/kube/<version>) it lists the control plane's
// binaries only, as every build before the node stack did, so that tools
// reading it keep working; PayloadFile there lists everything. In an
// installed tree (/opt/anvil/bin/<version>) it lists what was installed.
const ManifestFile = "manifest.json"

// PayloadFile is the manifest of everything a build directory holds: the
// control plane, the node stack, the CNI plugins and the image archives,
// each file marked with the Set it belongs to. Read it with ReadPayload and
// pick a host's files with ForRole or Subset.
const PayloadFile = "payload.json"

// Manifest records what a build produced: written by the build next to the
// binaries, carried in bundles and installed with them, and checked before
// any binary is installed, uploaded or started.
type Manifest struct {
	KubernetesVersion string `json:"kubernetesVersion"`
	EtcdVersion       string `json:"etcdVersion"`
	GoVersion         string `json:"goVersion,omitempty"`
	// InputHash covers everything that determines the binaries (the build
	// module's files, the Go version, the flags); an equal hash means a
	// rebuild would produce the same bytes, so it is skipped. In a payload
	// it covers every build's input hash.
	InputHash string `json:"inputHash,omitempty"`
	// Role, when set, says the files are the subset a host of that role
	// needs (see Subset); empty means everything that was built.
	Role v1alpha1.Role `json:"role,omitempty"`
	// Builds are the builds that made the files, in build order (payloads
	// and the per-user cache only).
	Builds []BuildRecord `json:"builds,omitempty"`
	Files  []File        `json:"files"`
}

// BuildRecord is one build that contributed files to a payload.
type BuildRecord struct {
	// Name is the build's name (BuildKube, BuildContainerd, …).
	Name string `json:"name"`
	// Version is the upstream version it built, e.g. containerd's v2.4.2.
	Version   string `json:"version"`
	InputHash string `json:"inputHash"`
}

// File is one binary (or image archive) and its checksum.
type File struct {
	// Name is the path relative to the manifest's directory: a plain name
	// for a binary, CNISubdir/<plugin> for a CNI plugin and
	// ImagesSubdir/<name>.tar for an image archive.
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Set says which hosts need the file; empty (as in manifests written
	// before the node stack) means SetControlPlane.
	Set Set `json:"set,omitempty"`
	// Build names the build that made the file.
	Build string `json:"build,omitempty"`
	// Image is the reference an image archive holds (repo:tag), as
	// `ctr -n k8s.io images import` names it.
	Image string `json:"image,omitempty"`
}

// Set groups files by the hosts that need them.
type Set string

const (
	// SetNode is the node stack every host runs, master or worker: the
	// kubelet, kube-proxy, containerd, ctr (anvil imports images with it),
	// runc, crictl (reset removes pods with it), the CNI plugins and the
	// pause, CoreDNS and test images.
	SetNode Set = "node"
	// SetControlPlane is what only masters need: kube-apiserver,
	// kube-controller-manager, kube-scheduler and kubectl.
	SetControlPlane Set = "control-plane"
	// SetConformance is what only a conformance run needs: the upstream
	// e2e test binary, which runs on the workstation, and the images its
	// tests use, which reach the nodes through the cluster file's images:
	// list. No host needs them to be a node.
	SetConformance Set = "conformance"
)

// set is f's Set, reading the empty Set of older manifests as the control
// plane, which was all they held.
func (f File) set() Set {
	if f.Set == "" {
		return SetControlPlane
	}
	return f.Set
}

// Needs reports whether a host of role needs files of set s: a worker runs
// the node stack; a master runs the node stack under its control plane.
func (s Set) Needs(role v1alpha1.Role) bool {
	switch role {
	case v1alpha1.RoleMaster:
		return s == SetNode || s == SetControlPlane
	case v1alpha1.RoleWorker:
		return s == SetNode
	}
	return false
}

// UnknownRoleError says a payload was asked for a role it has no answer for.
type UnknownRoleError struct{ Role v1alpha1.Role }

func (e *UnknownRoleError) Error() string {
	return fmt.Sprintf("no payload for role %q: roles are %s and %s", e.Role, v1alpha1.RoleMaster, v1alpha1.RoleWorker)
}

// ForRole returns, in manifest order, the files a host of role needs: the
// node set for a worker; every file for a master. Names are relative to the
// manifest's directory, so a file's source is filepath.Join(dir, f.Name) and
// its place on a host is filepath.Join(root.Bin(version), f.Name).
func (m *Manifest) ForRole(role v1alpha1.Role) ([]File, error) {
	if role != v1alpha1.RoleMaster && role != v1alpha1.RoleWorker {
		return nil, &UnknownRoleError{Role: role}
	}
	var out []File
	for _, f := range m.Files {
		if f.set().Needs(role) {
			out = append(out, f)
		}
	}
	return out, nil
}

// Subset is the manifest of what a host of role installs: m's fields, Role
// set, and ForRole's files. Written beside those files it lets Installed
// verify the host's tree.
func (m *Manifest) Subset(role v1alpha1.Role) (*Manifest, error) {
	files, err := m.ForRole(role)
	if err != nil {
		return nil, err
	}
	s := *m
	s.Role, s.Files = role, files
	s.Builds = slices.Clone(m.Builds)
	return &s, nil
}

// Image returns the image archive that holds ref.
func (m *Manifest) Image(ref string) (File, bool) {
	for _, f := range m.Files {
		if f.Image == ref {
			return f, true
		}
	}
	return File{}, false
}

// File returns the entry called name.
func (m *Manifest) File(name string) (File, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// ReadManifest reads the manifest in dir.
func ReadManifest(dir string) (*Manifest, error) {
	return readManifestFile(filepath.Join(dir, ManifestFile))
}

// ReadPayload reads the payload of the build in dir: PayloadFile, or
// ManifestFile where there is none (a build from before the node stack, an
// installed tree, an imported bundle), whose files are all the build holds.
func ReadPayload(dir string) (*Manifest, error) {
	m, err := readManifestFile(filepath.Join(dir, PayloadFile))
	if errors.Is(err, fs.ErrNotExist) {
		return ReadManifest(dir)
	}
	return m, err
}

func readManifestFile(path string) (*Manifest, error) {
	m, err := decodeManifest(path)
	if err != nil {
		return nil, err
	}
	if m.KubernetesVersion == "" {
		return nil, fmt.Errorf("read manifest %s: no version", path)
	}
	return m, nil
}

// decodeManifest reads a manifest without asking for a Kubernetes version:
// the cache's entries for builds other than the control plane's have none,
// since they do not depend on it.
func decodeManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", path, err)
	}
	if len(m.Files) == 0 {
		return nil, fmt.Errorf("read manifest %s: no files", path)
	}
	for _, f := range m.Files {
		if err := checkEntryName(f.Name); err != nil {
			return nil, fmt.Errorf("read manifest %s: file %q: %w", path, f.Name, err)
		}
	}
	return &m, nil
}

// WriteManifest writes m into dir atomically.
func WriteManifest(dir string, m *Manifest) error {
	return writeManifestFile(filepath.Join(dir, ManifestFile), m)
}

// WritePayload writes m into dir as its payload, atomically.
func WritePayload(dir string, m *Manifest) error {
	return writeManifestFile(filepath.Join(dir, PayloadFile), m)
}

func writeManifestFile(path string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, append(b, '\n'), 0o644, 0o755)
}

// ChecksumError says a file is not the one the manifest describes.
type ChecksumError struct {
	Path      string
	Want, Got string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%s: sha256 %s does not match the manifest's %s; rebuild it with `make kube` or re-import the bundle", e.Path, e.Got, e.Want)
}

// MissingError says a file the manifest lists is not there.
type MissingError struct{ Path string }

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s is missing; build it with `make kube` (anvil images build) or import a bundle with `anvil images import`", e.Path)
}

// Verify checks every file the manifest lists against its checksum, hashing
// them in parallel (a control plane's binaries are a few hundred MB, and
// this runs before every init and upload).
func (m *Manifest) Verify(dir string) error {
	errs := make([]error, len(m.Files))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, f := range m.Files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f.Verify(filepath.Join(dir, f.Name))
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Verify checks that the file at path has f's checksum.
func (f File) Verify(path string) error {
	sum, _, err := HashFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &MissingError{Path: path}
	}
	if err != nil {
		return err
	}
	if sum != f.SHA256 {
		return &ChecksumError{Path: path, Want: f.SHA256, Got: sum}
	}
	return nil
}

// HashFile returns the hex sha256 and the size of the file at path.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
