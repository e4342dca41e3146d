package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// BundleFormat identifies the bundle layout; a reader refuses others.
const BundleFormat = "anvil-bundle/v1"

// bundleIndexName is the first entry of every bundle.
const bundleIndexName = "bundle.json"

// AnvilBinary is the name of anvil's own binary inside a bundle and an
// installed version directory; the static-pod layout runs etcd from its image.
const AnvilBinary = "anvil"

// ImagesSubdir holds the OCI image archives inside a version directory.
const ImagesSubdir = "images"

// BundleIndex is the table of contents at the head of a bundle.
type BundleIndex struct {
	Format            string `json:"format"`
	KubernetesVersion string `json:"kubernetesVersion"`
	EtcdVersion       string `json:"etcdVersion"`
	AnvilVersion      string `json:"anvilVersion"`
	// Files are relative to the installed version directory, in the order
	// the bundle holds them.
	Files []File `json:"files"`
}

// BundleOptions says what goes into a bundle.
type BundleOptions struct {
	// Dir holds the built binaries and their manifest (OutDir/<version>).
	Dir string
	// Anvil is the anvil binary to ship (usually os.Executable()).
	Anvil        string
	AnvilVersion string
	// Out is the bundle file to write.
	Out      string
	Progress func(string)
}

// Bundle packs a verified build (every file of its payload: the control
// plane, the node stack, the CNI plugins and the image archives), anvil
// itself and an OCI image of each control-plane component (and of anvil,
// which runs etcd in the static-pod layout) into one zstd-compressed tar.
func Bundle(o BundleOptions) (*BundleIndex, error) {
	report := o.Progress
	if report == nil {
		report = func(string) {}
	}
	m, err := ReadPayload(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := m.Verify(o.Dir); err != nil {
		return nil, fmt.Errorf("refusing to bundle: %w", err)
	}
	rel, err := Lookup(m.KubernetesVersion)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(filepath.Dir(o.Out), ".bundle-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	type entry struct {
		name, src string
		// of is the payload's entry, whose set, build and image the
		// bundle's index keeps.
		of File
	}
	var entries []entry
	for _, f := range m.Files {
		entries = append(entries, entry{f.Name, filepath.Join(o.Dir, filepath.FromSlash(f.Name)), f})
	}
	entries = append(entries, entry{name: AnvilBinary, src: o.Anvil})
	imageOf := append(rel.ControlPlane(), AnvilBinary)
	for _, c := range imageOf {
		src := filepath.Join(o.Dir, c)
		if c == AnvilBinary {
			src = o.Anvil
		}
		name := path.Join(ImagesSubdir, c+".oci.tar")
		report(fmt.Sprintf("image %s", ImageRef(rel.Version, c)))
		if err := BuildImage(src, c, ImageRef(rel.Version, c), filepath.Join(work, c+".oci.tar")); err != nil {
			return nil, err
		}
		entries = append(entries, entry{name: name, src: filepath.Join(work, c+".oci.tar")})
	}

	idx := &BundleIndex{Format: BundleFormat, KubernetesVersion: rel.Version, EtcdVersion: rel.Etcd, AnvilVersion: o.AnvilVersion}
	for _, e := range entries {
		sum, size, err := HashFile(e.src)
		if err != nil {
			return nil, err
		}
		f := e.of
		f.Name, f.SHA256, f.Size = e.name, sum, size
		idx.Files = append(idx.Files, f)
	}
	head, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return nil, err
	}
	report(fmt.Sprintf("writing %s", o.Out))
	pr, pw := io.Pipe()
	go func() {
		zw, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		tw := tar.NewWriter(zw)
		err = writeTarEntry(tw, bundleIndexName, int64(len(head)), strings.NewReader(string(head)))
		for i := 0; err == nil && i < len(entries); i++ {
			err = copyIntoTar(tw, entries[i].name, entries[i].src, idx.Files[i].Size)
		}
		if err == nil {
			err = tw.Close()
		}
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	if err := fsutil.WriteFrom(o.Out, pr, 0o644, 0o755); err != nil {
		pr.CloseWithError(err)
		return nil, fmt.Errorf("write bundle %s: %w", o.Out, err)
	}
	return idx, nil
}

func copyIntoTar(tw *tar.Writer, name, src string, size int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return writeTarEntry(tw, name, size, f)
}

func writeTarEntry(tw *tar.Writer, name string, size int64, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: size, ModTime: epoch()}); err != nil {
		return err
	}
	_, err := io.CopyN(tw, r, size)
	return err
}

// BundleError says why a bundle was refused.
type BundleError struct {
	Bundle string
	Reason string
}

func (e *BundleError) Error() string {
	return fmt.Sprintf("bundle %s refused: %s; nothing was installed", e.Bundle, e.Reason)
}

// ImportOptions says where a bundle goes.
type ImportOptions struct {
	Bundle string
	// SHA256, when set, is the bundle file's expected sha256 in hex (as
	// sha256sum prints it, from where the bundle was made): any other
	// file is refused before a byte of it is decompressed.
	SHA256   string
	Root     hostfs.Root
	Progress func(string)
}

// Import verifies every checksum in a bundle, then installs it into
// <root>/opt/anvil/bin/<version>/. It reads the bundle twice: once to verify
// everything without writing anything, then to unpack into a staging
// directory (verifying again) that is renamed into place, so a truncated or
// tampered bundle never leaves a file behind.
func Import(o ImportOptions) (*BundleIndex, error) {
	report := o.Progress
	if report == nil {
		report = func(string) {}
	}
	if o.SHA256 != "" {
		report(fmt.Sprintf("checking the sha256 of %s", o.Bundle))
		if err := checkFileSHA256(o.Bundle, o.SHA256); err != nil {
			return nil, err
		}
	}
	report(fmt.Sprintf("verifying %s", o.Bundle))
	idx, err := readBundle(o.Bundle, nil)
	if err != nil {
		return nil, err
	}
	binRoot := o.Root.Path(hostfs.BinDir)
	if err := os.MkdirAll(binRoot, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", binRoot, err)
	}
	stage, err := os.MkdirTemp(binRoot, ".import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	report(fmt.Sprintf("unpacking kubernetes %s into %s", idx.KubernetesVersion, o.Root.Bin(idx.KubernetesVersion)))
	if _, err := readBundle(o.Bundle, func(f File, r io.Reader) error {
		mode := os.FileMode(0o755)
		if strings.HasPrefix(f.Name, ImagesSubdir+"/") {
			mode = 0o644
		}
		return fsutil.WriteFrom(filepath.Join(stage, filepath.FromSlash(f.Name)), r, mode, 0o755)
	}); err != nil {
		return nil, err
	}
	inst := &Manifest{KubernetesVersion: idx.KubernetesVersion, EtcdVersion: idx.EtcdVersion, Files: idx.Files}
	if err := WriteManifest(stage, inst); err != nil {
		return nil, err
	}
	if err := swapDir(stage, o.Root.Bin(idx.KubernetesVersion)); err != nil {
		return nil, err
	}
	return idx, nil
}

// ReadBundleIndex verifies a whole bundle and returns its index.
func ReadBundleIndex(bundle string) (*BundleIndex, error) { return readBundle(bundle, nil) }

// readBundle walks a bundle, checking its index, every entry's name, size
// and sha256, and that nothing is missing or extra. Each verified entry's
// content is passed to sink (when not nil) as it streams.
// FileSHA256 is the sha256 of file's content in hex, as sha256sum prints
// it.
func FileSHA256(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkFileSHA256 refuses file unless its sha256 is want (hex).
func checkFileSHA256(file, want string) error {
	want = strings.ToLower(strings.TrimSpace(want))
	if len(want) != sha256.Size*2 || strings.Trim(want, "0123456789abcdef") != "" {
		return fmt.Errorf("expected sha256 %q is not %d hex digits", want, sha256.Size*2)
	}
	got, err := FileSHA256(file)
	if err != nil {
		return err
	}
	if got != want {
		return &BundleError{Bundle: file, Reason: fmt.Sprintf("its sha256 is %s, and %s was expected: not the bundle you meant, or damaged on the way", got, want)}
	}
	return nil
}

func readBundle(bundle string, sink func(File, io.Reader) error) (*BundleIndex, error) {
	refuse := func(format string, args ...any) error {
		return &BundleError{Bundle: bundle, Reason: fmt.Sprintf(format, args...)}
	}
	f, err := os.Open(bundle)
	if err != nil {
		return nil, fmt.Errorf("open bundle: %w", err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		return nil, refuse("not a zstd stream: %v", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		return nil, refuse("cannot read its index: %v", err)
	}
	if hdr.Name != bundleIndexName || hdr.Size > 1<<20 {
		return nil, refuse("first entry is %q, not %s", hdr.Name, bundleIndexName)
	}
	var idx BundleIndex
	if err := json.NewDecoder(tr).Decode(&idx); err != nil {
		return nil, refuse("corrupt index: %v", err)
	}
	if idx.Format != BundleFormat {
		return nil, refuse("format %q, want %s", idx.Format, BundleFormat)
	}
	if _, err := Lookup(idx.KubernetesVersion); err != nil {
		return nil, refuse("%v", err)
	}
	want := map[string]File{}
	for _, fl := range idx.Files {
		if err := checkEntryName(fl.Name); err != nil {
			return nil, refuse("index entry %q: %v", fl.Name, err)
		}
		want[fl.Name] = fl
	}
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, refuse("truncated or corrupt after %d of %d files: %v", len(seen), len(want), err)
		}
		fl, ok := want[hdr.Name]
		if !ok || seen[hdr.Name] {
			return nil, refuse("unexpected entry %q", hdr.Name)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size != fl.Size {
			return nil, refuse("%s: size %d, index says %d", hdr.Name, hdr.Size, fl.Size)
		}
		seen[hdr.Name] = true
		h := sha256.New()
		r := io.TeeReader(io.LimitReader(tr, hdr.Size), h)
		if sink != nil {
			if err := sink(fl, r); err != nil {
				return nil, refuse("%s: %v", hdr.Name, err)
			}
		} else if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, refuse("%s: truncated or corrupt: %v", hdr.Name, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != fl.SHA256 {
			return nil, refuse("%s: sha256 %s, index says %s", hdr.Name, got, fl.SHA256)
		}
	}
	for _, fl := range idx.Files {
		if !seen[fl.Name] {
			return nil, refuse("truncated: %s is missing", fl.Name)
		}
	}
	return &idx, nil
}

// checkEntryName says why name cannot be a file of a build, a bundle or an
// installed tree, or nil. A name is relative segments joined by '/', each
// of lowercase letters, digits, '.', '_' and '-' and starting with a letter
// or digit (so no "..", no hidden file, nothing a command reads as an
// option), and not the manifests' own names. Names reach the file system
// on every host and the shell scripts the installer runs there; a bundle
// or payload is refused whole for one bad name, before anything is
// written.
func checkEntryName(name string) error {
	if name == "" {
		return errors.New("an empty name")
	}
	if name == ManifestFile || name == PayloadFile {
		return fmt.Errorf("%s is the manifest's own name", name)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" {
			return errors.New("an absolute path or an empty segment: write relative names like images/pause.tar")
		}
		if !isNameStart(seg[0]) {
			return fmt.Errorf("the segment %q does not start with a lowercase letter or digit", seg)
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !isNameStart(c) && c != '.' && c != '_' && c != '-' {
				return fmt.Errorf("%q is not allowed: use lowercase letters, digits, '.', '_' and '-'", c)
			}
		}
	}
	return nil
}

func isNameStart(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// swapDir puts the directory staged into place at dst, replacing what was
// there; the old directory is only removed once the new one is in place.
func swapDir(staged, dst string) error {
	old := dst + ".old"
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	hadOld := true
	if err := os.Rename(dst, old); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("move aside %s: %w", dst, err)
		}
		hadOld = false
	}
	if err := os.Rename(staged, dst); err != nil {
		if hadOld {
			os.Rename(old, dst)
		}
		return fmt.Errorf("install %s: %w", dst, err)
	}
	if hadOld {
		return os.RemoveAll(old)
	}
	return nil
}
