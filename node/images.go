package node

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// ImagesDir holds image archives the agent imports into containerd (k3s's
// agent/images convention): the installer puts the cluster file's images
// there, and links the release's own (pause, CoreDNS, the test app).
const ImagesDir = hostfs.StateDir + "/images"

// importedFile records which archives, by sha256, containerd has imported.
const importedFile = hostfs.StateDir + "/agent/images-imported.json"

// ImageNamespace is containerd's namespace the kubelet's images live in.
const ImageNamespace = "k8s.io"

// NotAnImageError names a file in the images directory that is not an
// image archive; nothing of it was imported.
type NotAnImageError struct {
	File   string
	Reason string
}

func (e *NotAnImageError) Error() string {
	return fmt.Sprintf("%s is not an image archive (docker-archive or OCI tar): %s; nothing of it was imported", e.File, e.Reason)
}

// ImportOptions say which archives to import into which containerd.
type ImportOptions struct {
	// Root is where the archives and the record of what was imported are.
	Root hostfs.Root
	// Ctr is containerd's ctr binary and Address containerd's socket.
	Ctr, Address string
	// Dirs are searched for *.tar archives, as paths from here (default,
	// when Files is empty too: ImagesDir under Root).
	Dirs []string
	// Files are archives to import besides those in Dirs (`anvil images
	// import`), whatever their names.
	Files []string
}

// ImportResult says what ImportImages did with each archive.
type ImportResult struct {
	Imported []string
	Kept     []string
	// Problems are archives that could not be imported; the others were.
	Problems []error
}

// ImportImages imports every image archive in the directories into
// containerd's k8s.io namespace, once per archive content: an archive whose
// sha256 was imported before is skipped, so the agent can run this at every
// start and whenever a file appears. A file that is not an image archive is
// reported by name and left out, without stopping the others.
func ImportImages(ctx context.Context, o ImportOptions) (ImportResult, error) {
	var res ImportResult
	dirs := o.Dirs
	if len(dirs) == 0 && len(o.Files) == 0 {
		dirs = []string{o.Root.Path(ImagesDir)}
	}
	files := slices.Clone(o.Files)
	for _, d := range dirs {
		matches, err := filepath.Glob(filepath.Join(d, "*.tar"))
		if err != nil {
			return res, err
		}
		files = append(files, matches...)
	}
	slices.Sort(files)
	done, err := readImported(o.Root)
	if err != nil {
		return res, err
	}
	for _, f := range files {
		sum, _, err := images.HashFile(f)
		if err != nil {
			res.Problems = append(res.Problems, fmt.Errorf("image archive %s: %w", f, err))
			continue
		}
		if slices.Contains(done, sum) {
			res.Kept = append(res.Kept, f)
			continue
		}
		if err := checkArchive(f); err != nil {
			res.Problems = append(res.Problems, err)
			continue
		}
		out, err := exec.CommandContext(ctx, o.Ctr, "--address", o.Address, "-n", ImageNamespace, "images", "import", f).CombinedOutput()
		if err != nil {
			res.Problems = append(res.Problems, fmt.Errorf("import %s into containerd: %w: %s", f, err, strings.TrimSpace(string(out))))
			continue
		}
		done = append(done, sum)
		res.Imported = append(res.Imported, f)
		if err := writeImported(o.Root, done); err != nil {
			return res, err
		}
	}
	return res, nil
}

// CheckImageArchive says whether file is an image archive containerd can
// import, reading only the tar's directory; a *NotAnImageError otherwise.
func CheckImageArchive(file string) error { return checkArchive(file) }

// checkArchive reads the tar's directory: a docker-archive has
// manifest.json, an OCI image layout oci-layout and index.json.
func checkArchive(file string) error {
	var names []string
	if err := walkArchive(file, func(name string, _ io.Reader) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return err
	}
	switch {
	case slices.Contains(names, "manifest.json"):
	case slices.Contains(names, "oci-layout") && slices.Contains(names, "index.json"):
	default:
		return &NotAnImageError{File: file, Reason: "it holds neither manifest.json nor oci-layout and index.json"}
	}
	return nil
}

// walkArchive calls fn with each entry of the tar file, by its name
// without a leading ./; a file that is not a tar is a *NotAnImageError.
func walkArchive(file string, fn func(name string, r io.Reader) error) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &NotAnImageError{File: file, Reason: "not a tar file: " + err.Error()}
		}
		if err := fn(strings.TrimPrefix(h.Name, "./"), tr); err != nil {
			return err
		}
	}
}

// ArchiveImageNames are the full names an image archive gives its images,
// as containerd names them when it imports the archive: a docker-archive's
// RepoTags, an OCI layout's io.containerd.image.name annotations, or its
// org.opencontainers.image.ref.name ones that are full names; short names
// completed as containerd completes them (busybox is
// docker.io/library/busybox:latest).
func ArchiveImageNames(file string) ([]string, error) {
	var names []string
	err := walkArchive(file, func(name string, r io.Reader) error {
		switch name {
		case "manifest.json":
			var m []struct{ RepoTags []string }
			if err := json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(&m); err != nil {
				return &NotAnImageError{File: file, Reason: "manifest.json: " + err.Error()}
			}
			for _, e := range m {
				for _, t := range e.RepoTags {
					names = append(names, fullImageName(t))
				}
			}
		case "index.json":
			var idx struct {
				Manifests []struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"manifests"`
			}
			if err := json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(&idx); err != nil {
				return &NotAnImageError{File: file, Reason: "index.json: " + err.Error()}
			}
			for _, m := range idx.Manifests {
				if n := m.Annotations["io.containerd.image.name"]; n != "" {
					names = append(names, fullImageName(n))
				} else if n := m.Annotations[refNameAnnotation]; strings.Contains(n, "/") {
					names = append(names, fullImageName(n))
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// refNameAnnotation is the OCI layout's name of an image.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// fullImageName completes a name as containerd's reference parser does:
// a name without a registry is Docker Hub's (under library/ when it has
// one path element), a name without a tag is :latest.
func fullImageName(n string) string {
	first, _, ok := strings.Cut(n, "/")
	switch {
	case !ok:
		n = "docker.io/library/" + n
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		n = "docker.io/" + n
	}
	if !strings.Contains(n, "@") && !strings.Contains(n[strings.LastIndex(n, "/"):], ":") {
		n += ":latest"
	}
	return n
}

func readImported(root hostfs.Root) ([]string, error) {
	b, err := os.ReadFile(root.Path(importedFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var sums []string
	if err := json.Unmarshal(b, &sums); err != nil {
		return nil, nil // a damaged record costs one re-import, nothing else
	}
	return sums, nil
}

func writeImported(root hostfs.Root, sums []string) error {
	b, err := json.MarshalIndent(sums, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(root.Path(importedFile), append(b, '\n'), 0o600, 0o700)
}
