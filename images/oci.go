package images

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageBinDir is where a component's binary sits inside its image.
const ImageBinDir = "/usr/local/bin"

// refNameAnnotation tags an image inside an OCI layout; containerd's
// `ctr images import` names the image after it.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// epoch is the fixed time in image metadata and layer entries, so the same
// binary always makes the same image digest.
func epoch() time.Time { return time.Unix(0, 0).UTC() }

// BuildImage makes a FROM-scratch OCI image holding only the static binary at
// binPath as ImageBinDir/<name>, with that as its entrypoint, and writes it
// as an OCI image layout packed in one tar file at out. No registry and no
// base image are involved.
func BuildImage(binPath, name, ref, out string) error {
	fi, err := os.Stat(binPath)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return binaryLayer(binPath, name, fi.Size())
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return fmt.Errorf("image %s: layer: %w", ref, err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "anvil images bundle: " + name, Created: v1.Time{Time: epoch()}}})
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch()}
	cf.Config.Entrypoint = []string{path.Join(ImageBinDir, name)}
	cf.Config.Env = []string{"PATH=" + ImageBinDir}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}

	dir, err := os.MkdirTemp(filepath.Dir(out), ".oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: ref})); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	return tarDir(dir, out)
}

// binaryLayer streams a tar holding one executable.
func binaryLayer(binPath, name string, size int64) (io.ReadCloser, error) {
	f, err := os.Open(binPath)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		tw := tar.NewWriter(pw)
		dirs := []string{"usr/", "usr/local/", "usr/local/bin/"}
		for _, d := range dirs {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch()}); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Join(ImageBinDir, name)[1:], Mode: 0o755, Size: size, ModTime: epoch()}
		if err := tw.WriteHeader(hdr); err != nil {
			pw.CloseWithError(err)
			return
		}
		if _, err := io.Copy(tw, f); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr, nil
}

// tarDir packs the regular files and directories under dir into a tar at out,
// in a fixed order with fixed times.
func tarDir(dir, out string) (err error) {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(out)
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: epoch()})
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: fi.Size(), ModTime: epoch()}); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", out, err)
	}
	return tw.Close()
}
