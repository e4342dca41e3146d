package images

import (
	"archive/tar"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// imageSpec says how a build's binary becomes an image: FROM scratch, the
// binary alone at /<name>, which is the entrypoint.
type imageSpec struct {
	// Ref is the image's repo:tag. When empty the tag is the build's short
	// input hash, under Repo.
	Ref  string
	Repo string
	// User is the numeric uid:gid the image runs as.
	User string
	// Cmd is the default argument list after the entrypoint.
	Cmd []string
	// Ports are exposed, as "53/udp".
	Ports []string
	// BindLowPorts gives the binary the file capability
	// cap_net_bind_service=+ep, so that a non-root User may bind ports
	// below 1024 (CoreDNS's 53), as upstream's images do with setcap.
	BindLowPorts bool
	// AlsoRefs are further names of the same image in its archive.
	AlsoRefs []string
	// Root, when set, is the Debian root under the binary (a layer of its
	// own, below the binary's): the test images' shell and tools.
	Root *rootSpec
	// Busybox makes the image busybox alone: this busybox, built from
	// Debian's source package, linked under every applet's name, with
	// the Root's users and groups and nothing else of it.
	Busybox *busyboxSpec
	// Entrypoint replaces the binary's path; an image without a binary
	// has none unless it is set.
	Entrypoint []string
	// BinaryPath is where the binary goes, /<its name> when empty (the
	// suite runs etcd as /usr/local/bin/etcd).
	BinaryPath string
	// Setuid gives the binary the set-user-ID bit (nonewprivs: the suite
	// checks that it raises a non-root user to root only where privilege
	// escalation is allowed).
	Setuid bool
	// SourceFiles are files of the build's upstream module put beside the
	// binary, as the upstream image's Dockerfile adds them (agnhost's
	// test certificate).
	SourceFiles []sourceFile
}

// sourceFile is a file of the upstream module's source in an image.
type sourceFile struct {
	// Path is where it goes in the image, From where it is in the module.
	Path, From string
}

// imageFormat changes whenever writeImageArchive writes different bytes for
// the same inputs, so that the images' input hashes change with it.
const imageFormat = "docker-archive/1"

// imagePath is the PATH an image's processes get: the usual one, though
// the image holds only its binary.
const imagePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (s imageSpec) hashKey() string {
	ref := s.Ref
	if ref == "" {
		ref = s.Repo + ":<input hash>"
	}
	key := fmt.Sprintf("%s ref=%s user=%s cmd=%q ports=%s lowports=%t", imageFormat, ref, s.User, s.Cmd, strings.Join(s.Ports, ","), s.BindLowPorts)
	// Written only for the images that have them, so the others' hashes
	// (and cached builds) stay as they were.
	if s.BinaryPath != "" || len(s.SourceFiles) > 0 || s.Setuid {
		// The files' contents are the pinned module's, which the build
		// module's go.sum (part of the input hash) names.
		key += fmt.Sprintf(" binary=%s sources=%q setuid=%t", s.BinaryPath, s.SourceFiles, s.Setuid)
	}
	if len(s.AlsoRefs) > 0 || s.Root != nil || len(s.Entrypoint) > 0 {
		key += fmt.Sprintf(" also=%s entrypoint=%q busybox=%t", strings.Join(s.AlsoRefs, ","), s.Entrypoint, s.Busybox != nil)
		if s.Root != nil {
			key += " root=" + s.Root.hashKey()
		}
		if s.Busybox != nil {
			// layout 2: every applet in /bin too.
			key += " busybox-source=" + s.Busybox.hashKey() + " busybox-layout=2"
		}
	}
	return key
}

// imageFiles are what an image is made of, each left out when empty.
type imageFiles struct {
	// bin is the static binary at /<its name>, the entrypoint.
	bin string
	// root is the Debian root below it.
	root string
	// busybox, for an image of busybox alone (imageSpec.Busybox), is the
	// binary; of the root only the users and groups are kept.
	busybox string
	// sources are imageSpec.SourceFiles, by their path in the image: the
	// files on this machine.
	sources map[string]string
}

// writeImageArchive packs the static binary in.bin on the Debian root
// in.root (or the busybox in.busybox with the root's users) into an image
// named spec.Ref (and spec.AlsoRefs) and writes it to out as a
// docker-archive tarball (manifest.json with RepoTags, config and layers),
// the format `ctr -n k8s.io images import` names after its RepoTags and
// go-containerregistry's tarball package reads back. Times are fixed, so
// the same binary on the same root makes the same archive (though with
// AlsoRefs, go-containerregistry lists the tags in any order; and
// debootstrap makes a new root different).
func writeImageArchive(in imageFiles, spec imageSpec, out string) error {
	tag, err := name.NewTag(spec.Ref)
	if err != nil {
		return fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	if (spec.Busybox != nil) != (in.busybox != "") || (in.busybox != "" && in.root == "") {
		return fmt.Errorf("image %s: an image of busybox alone needs the busybox binary and the root whose users it keeps", spec.Ref)
	}
	refs := map[name.Reference]v1.Image{}
	img := empty.Image
	if in.root != "" {
		open, what := func() (io.ReadCloser, error) { return treeLayer(in.root) }, "debian root"
		if in.busybox != "" {
			open, what = func() (io.ReadCloser, error) { return busyboxLayer(in.busybox, in.root) }, "busybox"
		}
		layer, err := tarball.LayerFromOpener(open)
		if err != nil {
			return fmt.Errorf("image %s: %s layer: %w", spec.Ref, what, err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "anvil images build: " + what, Created: v1.Time{Time: epoch()}}}); err != nil {
			return fmt.Errorf("image %s: %w", spec.Ref, err)
		}
	}
	entrypoint := spec.Entrypoint
	if bin := in.bin; bin != "" {
		fi, err := os.Stat(bin)
		if err != nil {
			return fmt.Errorf("image %s: %w", spec.Ref, err)
		}
		base := filepath.Base(bin)
		at := spec.BinaryPath
		if at == "" {
			at = "/" + base
		}
		mode := int64(0o755)
		if spec.Setuid {
			mode |= 0o4000
		}
		files := []layerFile{{name: strings.TrimPrefix(at, "/"), from: bin, size: fi.Size(), mode: mode, bindLowPorts: spec.BindLowPorts}}
		for _, p := range slices.Sorted(maps.Keys(in.sources)) {
			sfi, err := os.Stat(in.sources[p])
			if err != nil {
				return fmt.Errorf("image %s: %w", spec.Ref, err)
			}
			files = append(files, layerFile{name: strings.TrimPrefix(p, "/"), from: in.sources[p], size: sfi.Size(), mode: 0o644})
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return filesLayer(files) })
		if err != nil {
			return fmt.Errorf("image %s: layer: %w", spec.Ref, err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "anvil images build: " + base, Created: v1.Time{Time: epoch()}}}); err != nil {
			return fmt.Errorf("image %s: %w", spec.Ref, err)
		}
		if entrypoint == nil {
			entrypoint = []string{at}
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch()}
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.User = spec.User
	cf.Config.Env = []string{imagePath}
	cf.Config.WorkingDir = "/"
	if len(spec.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.Ports {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	refs[tag] = img
	for _, r := range spec.AlsoRefs {
		t, err := name.NewTag(r)
		if err != nil {
			return fmt.Errorf("image %s: %w", r, err)
		}
		refs[t] = img
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	err = tarball.MultiRefWrite(refs, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return fmt.Errorf("image %s: write %s: %w", spec.Ref, out, err)
	}
	return nil
}

// layerFile is one file of a layer: name is its path in the image
// (without the leading slash), from the file on this machine.
type layerFile struct {
	name, from   string
	size         int64
	mode         int64
	bindLowPorts bool
}

// filesLayer streams a tar of files, each after the directories above it
// (mode 0755, as a Dockerfile's ADD makes them).
func filesLayer(files []layerFile) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		dirs := map[string]bool{}
		for _, f := range files {
			var parents []string
			for d := path.Dir(f.name); d != "." && !dirs[d]; d = path.Dir(d) {
				parents = append(parents, d)
				dirs[d] = true
			}
			slices.Reverse(parents)
			for _, d := range parents {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch(), Format: tar.FormatPAX}); err != nil {
					pw.CloseWithError(err)
					return
				}
			}
			hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: f.size, ModTime: epoch(), Format: tar.FormatPAX}
			if f.bindLowPorts {
				hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(netBindServiceCap())}
			}
			if err := writeFileEntry(tw, hdr, f.from); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr, nil
}

func writeFileEntry(tw *tar.Writer, hdr *tar.Header, from string) error {
	f, err := os.Open(from)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err == nil && n != hdr.Size {
		err = fmt.Errorf("%s changed while it was packed", from)
	}
	return err
}

// netBindServiceCap is the security.capability extended attribute that
// `setcap cap_net_bind_service=+ep` writes: struct vfs_cap_data, revision 2,
// effective flag set, CAP_NET_BIND_SERVICE (10) permitted.
func netBindServiceCap() []byte {
	const (
		vfsCapRevision2      = 0x02000000
		vfsCapFlagsEffective = 0x000001
		capNetBindService    = 10
	)
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], vfsCapRevision2|vfsCapFlagsEffective)
	binary.LittleEndian.PutUint32(b[4:], 1<<capNetBindService)
	return b
}

// ImageConfig is what an image archive says about itself, as read back.
type ImageConfig struct {
	// Tags are the archive's RepoTags.
	Tags       []string
	Entrypoint []string
	Cmd        []string
	User       string
	Ports      []string
	// Files are the paths in the image's layers.
	Files []string
}

// ReadImageArchive reads an archive written by the build back through
// go-containerregistry, as a test or `anvil images list` would check it.
func ReadImageArchive(archive string) (*ImageConfig, error) {
	mf, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(archive) })
	if err != nil {
		return nil, fmt.Errorf("read image archive %s: %w", archive, err)
	}
	if len(mf) != 1 || len(mf[0].RepoTags) == 0 {
		return nil, fmt.Errorf("read image archive %s: want one tagged image, found %d", archive, len(mf))
	}
	tag, err := name.NewTag(mf[0].RepoTags[0])
	if err != nil {
		return nil, fmt.Errorf("read image archive %s: %w", archive, err)
	}
	img, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		return nil, fmt.Errorf("read image archive %s: %w", archive, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read image archive %s: config: %w", archive, err)
	}
	out := &ImageConfig{Tags: mf[0].RepoTags, Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, User: cf.Config.User}
	for p := range cf.Config.ExposedPorts {
		out.Ports = append(out.Ports, p)
	}
	slices.Sort(out.Ports)
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("read image archive %s: %w", archive, err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("read image archive %s: layer: %w", archive, err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return nil, fmt.Errorf("read image archive %s: layer: %w", archive, err)
			}
			out.Files = append(out.Files, path.Clean("/"+h.Name))
		}
		rc.Close()
	}
	return out, nil
}
