package images

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func TestConformanceBuilds(t *testing.T) {
	rel, _ := Lookup(DefaultVersion)
	names := map[string]bool{}
	for _, s := range append(rel.builds(), rel.conformanceBuilds()...) {
		if names[s.Name] {
			t.Errorf("two builds are named %s", s.Name)
		}
		names[s.Name] = true
	}
	for _, s := range rel.conformanceBuilds() {
		if s.Set != SetConformance {
			t.Errorf("%s: set %q", s.Name, s.Set)
		}
		if s.Module != "" {
			if _, err := pinnedModule(s.Module, s.Upstream, s.Version); err != nil {
				t.Errorf("%s: %v", s.Name, err)
			}
		}
		if s.Image == nil {
			continue
		}
		for _, r := range append([]string{s.Image.Ref}, s.Image.AlsoRefs...) {
			if _, err := name.NewTag(r, name.StrictValidation); err != nil {
				t.Errorf("%s: %v", s.Name, err)
			}
		}
	}
	if got := rel.conformanceBuilds()[0].binaries(); !slices.Equal(got, []string{E2EBinary}) {
		t.Errorf("the e2e build makes %v", got)
	}
}

// TestSuiteImagesMatchManifest holds the images' names to the ones the
// pinned suite expects, read from its own manifest in the module cache.
func TestSuiteImagesMatchManifest(t *testing.T) {
	cmd := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes")
	cmd.Dir = "conformance"
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOPROXY=off")
	out, err := cmd.Output()
	var dl struct{ Dir string }
	if err == nil {
		err = json.Unmarshal(out, &dl)
	}
	if err != nil || dl.Dir == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the pinned k8s.io/kubernetes is not in the module cache (go mod download in images/conformance): %v", err)
		}
		t.Skipf("the pinned k8s.io/kubernetes is not in the module cache: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(dl.Dir, "test", "utils", "image", "manifest.go"))
	if err != nil {
		t.Fatal(err)
	}
	registries := map[string]string{}
	for _, m := range regexp.MustCompile(`(\w+Registry):\s+"([^"]+)"`).FindAllStringSubmatch(string(src), -1) {
		if _, ok := registries[m[1]]; !ok {
			registries[m[1]] = m[2]
		}
	}
	suite := map[string]string{}
	for _, m := range regexp.MustCompile(`configs\[(\w+)\] = Config\{list\.(\w+), "([^"]+)", "([^"]+)"\}`).FindAllStringSubmatch(string(src), -1) {
		suite[m[1]] = registries[m[2]] + "/" + m[3] + ":" + m[4]
	}
	rel, _ := Lookup(DefaultVersion)
	for id, ref := range map[string]string{
		"Agnhost": rel.Suite.Agnhost, "AgnhostPrev": rel.Suite.AgnhostPrev, "BusyBox": rel.Suite.Busybox,
		"Nginx": rel.Suite.Nginx, "NginxNew": rel.Suite.NginxNew, "GlibcDnsTesting": rel.Suite.GlibcDNSTesting, "Pause": rel.Suite.Pause,
		"APIServer": rel.Suite.SampleAPIServer, "Etcd": rel.Suite.Etcd, "Nautilus": rel.Suite.Nautilus, "Nonewprivs": rel.Suite.Nonewprivs, "Kitten": rel.Suite.Kitten,
	} {
		if suite[id] != ref {
			t.Errorf("the suite names %s %q, anvil builds %q", id, suite[id], ref)
		}
	}
}
