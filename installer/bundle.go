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

	"anvil.dev/anvil/images"
)

// bundle is what apply installs on every host: one Kubernetes version's
// build, and this anvil.
type bundle struct {
	version string
	// files are anvil, then the components in the manifest's order.
	files []bundleFile
	// manifest is manifest.json as it lands on hosts: the build's, plus
	// anvil's own entry, exactly as images.Install writes it, so that
	// images.Installed on the host verifies what apply uploaded.
	manifest []byte
	// arch is the machine (uname -m) the binaries run on.
	arch string
}

type bundleFile struct {
	images.File
	path string
}

func (b *bundle) anvil() bundleFile { return b.files[0] }

func (b *bundle) names() []string {
	var out []string
	for _, f := range b.files {
		out = append(out, f.Name)
	}
	return out
}

func (b *bundle) components() []string { return b.names()[1:] }

// loadBundle reads the build's manifest and hashes anvil. The component
// binaries are checked against the manifest when they are compressed for
// an upload, not here: an apply with nothing to upload reads none of them.
func loadBundle(anvil string, kubeDirs []string, version string) (*bundle, error) {
	if anvil == "" {
		return nil, errors.New("no anvil binary to install")
	}
	var dir string
	var m *images.Manifest
	for _, kd := range kubeDirs {
		d := filepath.Join(kd, version)
		mm, err := images.ReadManifest(d)
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
		return nil, fmt.Errorf("no build of Kubernetes %s in %s: build it with `make kube` (anvil images build --version %s)", version, strings.Join(kubeDirs, ", "), version)
	}
	if m.KubernetesVersion != version {
		return nil, fmt.Errorf("%s describes Kubernetes %s, not %s", filepath.Join(dir, images.ManifestFile), m.KubernetesVersion, version)
	}
	sum, size, err := images.HashFile(anvil)
	if err != nil {
		return nil, fmt.Errorf("anvil binary: %w", err)
	}
	arch, err := elfArch(anvil)
	if err != nil {
		return nil, err
	}
	b := &bundle{version: version, arch: arch}
	b.files = append(b.files, bundleFile{File: images.File{Name: images.AnvilBinary, SHA256: sum, Size: size}, path: anvil})
	// The same manifest images.Install writes: the build's fields, its
	// files, then anvil. (An installed tree's manifest lists its own
	// anvil, which this one replaces.)
	want := images.Manifest{KubernetesVersion: m.KubernetesVersion, EtcdVersion: m.EtcdVersion, GoVersion: m.GoVersion, InputHash: m.InputHash}
	for _, f := range m.Files {
		if f.Name == images.AnvilBinary {
			continue
		}
		if filepath.Base(f.Name) != f.Name {
			return nil, fmt.Errorf("%s: unexpected entry %q", filepath.Join(dir, images.ManifestFile), f.Name)
		}
		b.files = append(b.files, bundleFile{File: f, path: filepath.Join(dir, f.Name)})
		want.Files = append(want.Files, f)
	}
	want.Files = append(want.Files, b.files[0].File)
	j, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		return nil, err
	}
	b.manifest = append(j, '\n')
	return b, nil
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

// linkOK reports whether the facts say a host's /usr/local/bin/<name>
// points at this bundle's binary.
func (b *bundle) linkOK(links map[string]string, name string) bool {
	return links[name] == path.Join(binDir(b.version), name)
}
