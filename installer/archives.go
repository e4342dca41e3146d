package installer

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"anvil.dev/anvil/images"
)

// The cluster file's image archives (images:): container images saved to
// files (docker save, skopeo copy docker-archive: or oci-archive:) that
// apply puts on every host that runs pods, in /var/lib/anvil/images, for
// the node agent to import into containerd, so workloads run without a
// registry. Each is checked on the workstation before anything is
// uploaded: a file that is not an image archive containerd can import is
// refused in validate, naming it and why.

// archive is one image archive of the cluster file.
type archive struct {
	// field is where the cluster file lists it ("images[0]") and spec the
	// path as written there, for messages.
	field, spec string
	// path is the file on the workstation.
	path string
	// name is its name on hosts, in imagesDir: its base name.
	name   string
	sha256 string
	size   int64
	// refs are the images it holds, as its manifest names them.
	refs []string
}

func (a archive) file() bundleFile {
	return bundleFile{File: images.File{Name: a.name, SHA256: a.sha256, Size: a.size}, path: a.path, dir: imagesDir}
}

// describe names the archive as the cluster file does, and where that is
// when the file wrote it otherwise.
func (a archive) describe() string {
	s := fmt.Sprintf("%s %s", a.field, a.spec)
	if a.path != a.spec {
		s += fmt.Sprintf(" (%s)", a.path)
	}
	return s
}

// loadArchives checks and hashes the image archives at specs (resolved
// by resolve: relative to the cluster file's directory). reserved are the
// names the build's own image archives have in imagesDir. It returns the
// archives that are fine and, for the rest, what is wrong, each problem
// naming the file: two archives with one base name, a name the build's
// archives take, a file that is missing, unreadable or not an image
// archive.
func loadArchives(specs []string, resolve func(string) (string, error), reserved []string) ([]archive, []string) {
	var out []archive
	var problems []string
	byName := map[string]archive{}
	for i, spec := range specs {
		a := archive{field: fmt.Sprintf("images[%d]", i), spec: spec}
		p, err := resolve(spec)
		if err != nil {
			problems = append(problems, fmt.Sprintf("image archive %s: %v", a.describe(), err))
			continue
		}
		a.path = filepath.Clean(p)
		a.name = filepath.Base(a.path)
		if other, ok := byName[a.name]; ok {
			if other.path == a.path {
				problems = append(problems, fmt.Sprintf("image archive %s is listed twice, as %s too: list it once", a.describe(), other.field))
			} else {
				problems = append(problems, fmt.Sprintf("image archives %s and %s have the same name %s on hosts (%s): rename one", other.describe(), a.describe(), a.name, path.Join(imagesDir, a.name)))
			}
			continue
		}
		byName[a.name] = a
		if slices.Contains(reserved, a.name) {
			problems = append(problems, fmt.Sprintf("image archive %s: %s is the name of the build's own %s in %s: rename the file", a.describe(), a.name, path.Join(images.ImagesSubdir, a.name), imagesDir))
			continue
		}
		if !validName(a.name) {
			problems = append(problems, fmt.Sprintf("image archive %s: %q cannot be a file name on hosts: rename the file", a.describe(), a.name))
			continue
		}
		if a.refs, err = imageRefs(a.path); err != nil {
			problems = append(problems, fmt.Sprintf("image archive %s: %v", a.describe(), err))
			continue
		}
		if a.sha256, a.size, err = images.HashFile(a.path); err != nil {
			problems = append(problems, fmt.Sprintf("image archive %s: %v", a.describe(), err))
			continue
		}
		out = append(out, a)
	}
	return out, problems
}

// maxArchiveJSON bounds what of an archive is read as a manifest, an
// index or a config: those are kilobytes.
const maxArchiveJSON = 4 << 20

// imageRefs checks that the file at p is an image archive `ctr images
// import` takes — a docker-archive (docker save: manifest.json with
// RepoTags) or an OCI image layout in a tar (index.json, oci-layout) —
// whose manifests' blobs are all there, and returns the image names it
// holds. An archive must name its images: pods refer to them by name.
func imageRefs(p string) ([]string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	if why := compressedAs(p); why != "" {
		return nil, fmt.Errorf("it is %s-compressed: list the tar itself (apply compresses what it sends)", why)
	}
	entries, err := tarEntries(p)
	if err != nil {
		return nil, fmt.Errorf("not an image archive: not a tar file: %w", err)
	}
	switch {
	case entries["manifest.json"]:
		return dockerArchiveRefs(p, entries)
	case entries["index.json"] && entries["oci-layout"]:
		return ociArchiveRefs(p, entries)
	}
	return nil, errors.New("not an image archive: a tar with neither manifest.json (docker save) nor index.json and oci-layout (an OCI image layout)")
}

// compressedAs names the compression p starts with, or "".
func compressedAs(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	magic := make([]byte, 6)
	n, _ := io.ReadFull(f, magic)
	magic = magic[:n]
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return "gzip"
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd"
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz"
	case bytes.HasPrefix(magic, []byte("BZh")):
		return "bzip2"
	}
	return ""
}

// tarEntries lists the regular files and links of the tar at p, by clean
// name. Only headers are read: the tar reader seeks past contents.
func tarEntries(p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
			out[path.Clean(h.Name)] = true
		}
	}
	if len(out) == 0 {
		return nil, errors.New("it holds no files")
	}
	return out, nil
}

func dockerArchiveRefs(p string, entries map[string]bool) ([]string, error) {
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(p) })
	if err != nil {
		return nil, fmt.Errorf("not an image archive: manifest.json: %w", err)
	}
	if len(m) == 0 {
		return nil, errors.New("not an image archive: manifest.json lists no image")
	}
	var refs []string
	for i, d := range m {
		for _, blob := range append([]string{d.Config}, d.Layers...) {
			if blob == "" || !entries[path.Clean(blob)] {
				return nil, fmt.Errorf("not a whole image archive: image %d of manifest.json refers to %q, which the archive lacks", i, blob)
			}
		}
		refs = append(refs, d.RepoTags...)
	}
	if len(refs) == 0 {
		return nil, errors.New("its images have no names (RepoTags): save them by name (docker save NAME:TAG), not by ID")
	}
	return refs, nil
}

// ociRefAnnotations name an image in an OCI layout's index, as `ctr
// images import` reads them.
func ociRefAnnotations() []string {
	return []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"}
}

func ociArchiveRefs(p string, entries map[string]bool) ([]string, error) {
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	b, err := tarFile(p, "oci-layout")
	if err == nil {
		err = json.Unmarshal(b, &layout)
	}
	if err != nil || layout.Version == "" {
		return nil, fmt.Errorf("not an image archive: oci-layout is not an OCI layout's (%v)", orNoVersion(err))
	}
	b, err = tarFile(p, "index.json")
	if err != nil {
		return nil, fmt.Errorf("not an image archive: index.json: %w", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("not an image archive: index.json: %w", err)
	}
	if len(idx.Manifests) == 0 {
		return nil, errors.New("not an image archive: index.json lists no image")
	}
	var refs []string
	for _, d := range idx.Manifests {
		for _, k := range ociRefAnnotations() {
			if r := d.Annotations[k]; r != "" {
				refs = append(refs, r)
				break
			}
		}
		if err := checkOCIBlobs(p, entries, d, 0); err != nil {
			return nil, err
		}
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("its images have no names (no %s annotation in index.json): save them by name", strings.Join(ociRefAnnotations(), " or "))
	}
	return refs, nil
}

func orNoVersion(err error) error {
	if err != nil {
		return err
	}
	return errors.New("no imageLayoutVersion")
}

// checkOCIBlobs checks that the blob d describes is in the archive and,
// for a manifest or an index, every blob it refers to.
func checkOCIBlobs(p string, entries map[string]bool, d v1.Descriptor, depth int) error {
	blob := path.Join("blobs", d.Digest.Algorithm, d.Digest.Hex)
	if d.Digest.Hex == "" || !entries[blob] {
		return fmt.Errorf("not a whole image archive: it refers to %s, which it lacks", blob)
	}
	if depth > 4 {
		return errors.New("not an image archive: indexes nested too deep")
	}
	switch {
	case d.MediaType.IsIndex():
		b, err := tarFile(p, blob)
		if err != nil {
			return err
		}
		idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("not an image archive: %s: %w", blob, err)
		}
		for _, m := range idx.Manifests {
			if err := checkOCIBlobs(p, entries, m, depth+1); err != nil {
				return err
			}
		}
	case d.MediaType.IsImage():
		b, err := tarFile(p, blob)
		if err != nil {
			return err
		}
		m, err := v1.ParseManifest(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("not an image archive: %s: %w", blob, err)
		}
		for _, l := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			lb := path.Join("blobs", l.Digest.Algorithm, l.Digest.Hex)
			if l.Digest.Hex == "" || !entries[lb] {
				return fmt.Errorf("not a whole image archive: %s refers to %s, which it lacks", blob, lb)
			}
		}
	}
	return nil
}

// tarFile reads one small file of the tar at p.
func tarFile(p, name string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s is not in the archive", name)
		}
		if err != nil {
			return nil, err
		}
		if path.Clean(h.Name) != name {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%s in the archive is not a file", name)
		}
		if h.Size > maxArchiveJSON {
			return nil, fmt.Errorf("%s in the archive is %d bytes, too big for what it should be", name, h.Size)
		}
		return io.ReadAll(tr)
	}
}
