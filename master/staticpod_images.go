package master

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
)

// StaticPodImagesDir keeps the image archives a static-pod master makes of
// its control-plane binaries, one per binary content, so a second init or
// join makes none.
const StaticPodImagesDir = hostfs.StateDir + "/static-pod-images"

// staticPodImages makes, for each of cs that runs from an image, an image
// archive of its binary (from binDir, anvil's own from the running anvil)
// under the name its manifest gives, and returns the archives. An archive
// is named after its binary's sha256, so one already made is kept and an
// older one of the same component is removed.
func staticPodImages(root hostfs.Root, cs []component.Spec, binDir, anvil string, task *progress.Task) ([]string, error) {
	dir := root.Path(StaticPodImagesDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var out []string
	made := map[string]bool{}
	for _, c := range cs {
		if c.Image.Ref == "" || made[c.Image.Ref] {
			continue
		}
		made[c.Image.Ref] = true
		name := path.Base(c.Image.Binary)
		src := filepath.Join(root.Path(binDir), name)
		if name == images.AnvilBinary {
			src = anvil
		}
		sum, _, err := images.HashFile(src)
		if err != nil {
			return nil, fmt.Errorf("image %s of component %s: %w", c.Image.Ref, c.Name, err)
		}
		archive := filepath.Join(dir, name+"-"+sum[:16]+".oci.tar")
		if _, err := os.Stat(archive); err != nil {
			task.Say("making image %s from %s", c.Image.Ref, src)
			tmp := archive + ".tmp"
			if err := images.BuildImage(src, name, c.Image.Ref, tmp); err != nil {
				os.Remove(tmp)
				return nil, err
			}
			if err := os.Rename(tmp, archive); err != nil {
				return nil, err
			}
		}
		old, err := filepath.Glob(filepath.Join(dir, name+"-*.oci.tar"))
		if err != nil {
			return nil, err
		}
		for _, o := range old {
			if o != archive && !strings.HasSuffix(o, ".tmp") {
				os.Remove(o)
			}
		}
		out = append(out, archive)
	}
	return out, nil
}
