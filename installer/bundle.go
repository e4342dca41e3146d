package installer

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/node"
)

// bundle is what apply installs: one Kubernetes version's build (its
// payload: the control plane, the node stack, the CNI plugins and the
// image archives), this anvil, and the cluster file's own image archives.
// Each host gets the part its role and runtime need (forHost).
type bundle struct {
	version string
	// payload is the build's payload.json (or the manifest.json of a
	// build from before the node stack, whose files are all control
	// plane), without any anvil entry of its own.
	payload *images.Manifest
	// dir is the build directory the payload describes.
	dir   string
	anvil bundleFile
	// archives are the cluster file's image archives (images:), checked
	// and hashed by loadArchives, and archiveProblems what is wrong with
	// the others, for validate to report.
	archives        []archive
	archiveProblems []string
	// arch is the machine (uname -m) the binaries run on.
	arch string
}

// bundleFile is one file to put on hosts: its entry (Name relative to
// the version directory, or to dir when dir is set), where it is on the
// workstation, and the host directory it lands in when that is not the
// version directory.
type bundleFile struct {
	images.File
	path string
	dir  string
}

// hostPath is where the file lands on a host of version.
func (f bundleFile) hostPath(version string) string {
	if f.dir != "" {
		return path.Join(f.dir, f.Name)
	}
	return path.Join(binDir(version), f.Name)
}

// mode is the file's mode on hosts: image archives are data, the rest
// are programs.
func (f bundleFile) mode() uint32 {
	if f.dir != "" || strings.HasPrefix(f.Name, images.ImagesSubdir+"/") {
		return 0o644
	}
	return 0o755
}

// Where links to a version's files go, by the subdirectory the file is
// in: operators' tools find the binaries on PATH, the CNI plugins where
// every CNI configuration looks for them, and the image archives where
// the node agent imports them from, beside the cluster file's own.
const (
	// cniLinkDir is CNI's conventional plugin directory.
	cniLinkDir = node.CNIBinDir
	// imagesDir holds the image archives a node's agent imports into
	// containerd: links to the build's, and the cluster file's archives
	// themselves.
	imagesDir = node.ImagesDir
)

// linkDirs maps a subdirectory of the version directory to where its
// files are linked; files in a subdirectory not listed are not linked.
func linkDirs() map[string]string {
	return map[string]string{"": hostfs.LinkDir, images.CNISubdir: cniLinkDir, images.ImagesSubdir: imagesDir}
}

// hostLink is one link on a host: dir/<base of name> → the version
// directory's name.
type hostLink struct {
	name string
	dir  string
}

func (l hostLink) path() string { return path.Join(l.dir, path.Base(l.name)) }

func (l hostLink) target(version string) string { return path.Join(binDir(version), l.name) }

// linkFor is the link a file of the version directory gets, if any.
func linkFor(name string) (hostLink, bool) {
	sub, _ := path.Split(name)
	dir, ok := linkDirs()[strings.TrimSuffix(sub, "/")]
	return hostLink{name: name, dir: dir}, ok
}

// hostPayload is what one host gets.
type hostPayload struct {
	// files are anvil, then the build's files the host needs, in the
	// payload's order.
	files []bundleFile
	// archives are the cluster file's image archives, into imagesDir.
	archives []bundleFile
	// manifest is manifest.json as it lands on the host: what images.Install
	// writes for the host's role (the payload's fields, Role, the files,
	// then anvil), so images.Installed on the host verifies what apply
	// uploaded.
	manifest []byte
	links    []hostLink
}

// loadBundle reads the build's payload and hashes anvil. The build's
// files are checked against the payload when they are compressed for an
// upload, not here: an apply with nothing to upload reads none of them.
func loadBundle(anvil string, kubeDirs []string, version string) (*bundle, error) {
	if anvil == "" {
		return nil, errors.New("no anvil binary to install")
	}
	var dir string
	var m *images.Manifest
	for _, kd := range kubeDirs {
		d := filepath.Join(kd, version)
		mm, err := images.ReadPayload(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		dir, m = d, mm
		break
	}
	if m == nil {
		return nil, fmt.Errorf("no build of Kubernetes %s in %s: build it with `make kube KUBE_VERSION=%s` (anvil images build --version %s), or import its bundle (anvil images import)", version, strings.Join(kubeDirs, ", "), version, version)
	}
	if m.KubernetesVersion != version {
		return nil, fmt.Errorf("%s describes Kubernetes %s, not %s", dir, m.KubernetesVersion, version)
	}
	sum, size, err := images.HashFile(anvil)
	if err != nil {
		return nil, fmt.Errorf("anvil binary: %w", err)
	}
	arch, err := elfArch(anvil)
	if err != nil {
		return nil, err
	}
	// An installed tree's manifest lists its own anvil, which this one
	// replaces.
	payload := *m
	payload.Files = nil
	for _, f := range m.Files {
		if f.Name == images.AnvilBinary {
			continue
		}
		if sub, _ := path.Split(f.Name); strings.Count(f.Name, "/") > 1 || (sub != "" && sub != images.CNISubdir+"/" && sub != images.ImagesSubdir+"/") {
			return nil, fmt.Errorf("%s: unexpected entry %q: files are at the top, in %s/ or in %s/", dir, f.Name, images.CNISubdir, images.ImagesSubdir)
		}
		payload.Files = append(payload.Files, f)
	}
	return &bundle{
		version: version, payload: &payload, dir: dir, arch: arch,
		anvil: bundleFile{File: images.File{Name: images.AnvilBinary, SHA256: sum, Size: size}, path: anvil},
	}, nil
}

// runsPods reports whether a host runs the node stack (containerd, runc
// and the kubelet): every host but those whose runtime is none.
func runsPods(h v1alpha1.Host) bool { return h.Runtime != v1alpha1.RuntimeNone }

// forHost is what h gets: the payload's subset for its role (a worker the
// node set, a master everything), without the node set when the host
// runs no pods; anvil; links to its top-level binaries in /usr/local/bin,
// to its CNI plugins in /opt/cni/bin and to its image archives in
// /var/lib/anvil/images; and the cluster file's image archives when it
// runs pods.
func (b *bundle) forHost(h v1alpha1.Host) (*hostPayload, error) {
	sub, err := b.payload.Subset(h.Role)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	if !runsPods(h) {
		var keep []images.File
		for _, f := range sub.Files {
			if f.Set != images.SetNode {
				keep = append(keep, f)
			}
		}
		sub.Files = keep
	}
	p := &hostPayload{files: []bundleFile{b.anvil}}
	for _, f := range sub.Files {
		p.files = append(p.files, bundleFile{File: f, path: filepath.Join(b.dir, filepath.FromSlash(f.Name))})
	}
	sub.Files = append(sub.Files, b.anvil.File)
	j, err := json.MarshalIndent(sub, "", "  ")
	if err != nil {
		return nil, err
	}
	p.manifest = append(j, '\n')
	for _, f := range p.files {
		if l, ok := linkFor(f.Name); ok {
			p.links = append(p.links, l)
		}
	}
	if runsPods(h) {
		for _, a := range b.archives {
			p.archives = append(p.archives, a.file())
		}
	}
	return p, nil
}

// addArchives checks and hashes the cluster file's image archives,
// specs, whose relative paths are relative to the cluster file's
// directory (the working directory without a cluster file).
func (b *bundle) addArchives(specs []string, clusterFile string) {
	base := ""
	if clusterFile != "" {
		base = filepath.Dir(clusterFile)
	}
	resolve := func(spec string) (string, error) {
		if spec == "" {
			return "", errors.New("an empty path")
		}
		if filepath.IsAbs(spec) {
			return spec, nil
		}
		return filepath.Join(base, spec), nil
	}
	var reserved []string
	for _, f := range b.payload.Files {
		if sub, name := path.Split(f.Name); sub == images.ImagesSubdir+"/" {
			reserved = append(reserved, name)
		}
	}
	b.archives, b.archiveProblems = loadArchives(specs, resolve, reserved)
}

// factsRequest is what the facts look at for this bundle: every file
// and link any host may have of it, whatever its role.
func (b *bundle) factsRequest() factsRequest {
	return factsRequest{version: b.version, files: b.installedNames(), archives: b.archiveNames(), links: b.linkNames()}
}

// installedNames are the names in the version directory that any host of
// c may have, for the facts to hash (anvil aside, which they always do).
func (b *bundle) installedNames() []string {
	var out []string
	for _, f := range b.payload.Files {
		out = append(out, f.Name)
	}
	return out
}

// archiveNames are the names the cluster file's archives have in
// imagesDir.
func (b *bundle) archiveNames() []string {
	var out []string
	for _, a := range b.archives {
		out = append(out, a.name)
	}
	return out
}

// linkNames are every link any host may get, by directory, for the facts
// to read.
func (b *bundle) linkNames() map[string][]string {
	out := map[string][]string{hostfs.LinkDir: {images.AnvilBinary}}
	for _, f := range b.payload.Files {
		if l, ok := linkFor(f.Name); ok {
			out[l.dir] = append(out[l.dir], path.Base(l.name))
		}
	}
	return out
}

// elfArch is the machine an executable is built for, named as uname -m
// names it.
func elfArch(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: not an executable for Linux: %w", path, err)
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "x86_64", nil
	case elf.EM_AARCH64:
		return "aarch64", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	case elf.EM_PPC64:
		return "ppc64le", nil
	case elf.EM_S390:
		return "s390x", nil
	}
	return "", fmt.Errorf("%s: built for %s, which anvil does not install", path, f.Machine)
}
