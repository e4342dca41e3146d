package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"anvil.dev/anvil/internal/hostfs"
)

// fakeBuild lays out what Build writes, with small stand-in binaries, so the
// manifest, bundle and import logic can be tested in milliseconds.
func fakeBuild(t *testing.T) (outDir string, m *Manifest) {
	t.Helper()
	outDir = t.TempDir()
	rel, err := Lookup(DefaultVersion)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(outDir, rel.Version)
	m = &Manifest{KubernetesVersion: rel.Version, EtcdVersion: rel.Etcd}
	for _, c := range rel.Components {
		p := filepath.Join(dir, c)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho "+c+" "+strings.Repeat("x", 4096)+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		sum, size, err := HashFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, File{Name: c, SHA256: sum, Size: size})
	}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return outDir, m
}

func fakeAnvil(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "anvil")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho anvil\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLookup(t *testing.T) {
	if _, err := Lookup("v1.37.2"); err != nil {
		t.Fatal(err)
	}
	_, err := Lookup("v1.12.0")
	var uv *UnsupportedVersionError
	if !errors.As(err, &uv) || !strings.Contains(err.Error(), "v1.37.2") {
		t.Fatalf("want an error listing supported versions, got %v", err)
	}
}

func TestVersionLDFlags(t *testing.T) {
	rel, _ := Lookup("v1.37.2")
	got := versionLDFlags(rel)
	for _, want := range []string{
		"-X 'k8s.io/component-base/version.gitVersion=v1.37.2'",
		"-X 'k8s.io/client-go/pkg/version.gitVersion=v1.37.2'",
		"-X 'k8s.io/component-base/version.gitMajor=1'",
		"-X 'k8s.io/component-base/version.gitMinor=37'",
		"-X 'k8s.io/component-base/version.gitTreeState=clean'",
		"-X 'k8s.io/component-base/version.buildDate=2026-10-27T12:01:04Z'",
		"-s -w",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ldflags lack %q:\n%s", want, got)
		}
	}
}

func TestBuildInputHashTracksInputs(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module x\n"), 0o644)
	rel, _ := Lookup(DefaultVersion)
	var node buildSpec
	for _, s := range rel.builds() {
		if s.Name == BuildRunc {
			node = s
		}
	}
	in := []hashedDir{{dir: src}}
	hash := func(s buildSpec, goVersion, ldflags string, extra []string) (string, error) {
		return inputHash(s, goVersion, ldflags, extra, in)
	}
	h1, err := hash(node, "go1.26.8", "-s", []string{"cc gcc 12"})
	if err != nil {
		t.Fatal(err)
	}
	if h2, _ := hash(node, "go1.26.8", "-s", []string{"cc gcc 12"}); h2 != h1 {
		t.Fatal("hash is not stable")
	}
	tagged := node
	tagged.Tags = []string{"seccomp"}
	imaged := node
	imaged.Image = &imageSpec{Ref: "localhost/x:1", User: "1:1"}
	for name, change := range map[string]func() (string, error){
		"go version": func() (string, error) { return hash(node, "go1.26.9", "-s", []string{"cc gcc 12"}) },
		"ldflags":    func() (string, error) { return hash(node, "go1.26.8", "-s -w", []string{"cc gcc 12"}) },
		"C compiler": func() (string, error) { return hash(node, "go1.26.8", "-s", []string{"cc gcc 13"}) },
		"tags":       func() (string, error) { return hash(tagged, "go1.26.8", "-s", []string{"cc gcc 12"}) },
		"image":      func() (string, error) { return hash(imaged, "go1.26.8", "-s", []string{"cc gcc 12"}) },
		"go.sum": func() (string, error) {
			os.WriteFile(filepath.Join(src, "go.sum"), []byte("x v1 h1:abc\n"), 0o644)
			return hash(node, "go1.26.8", "-s", []string{"cc gcc 12"})
		},
	} {
		if h, err := change(); err != nil || h == h1 {
			t.Errorf("%s: hash did not change (%v)", name, err)
		}
	}
}

// TestControlPlaneInputHashUnchanged pins the control plane's input hash to
// the formula every build before the node stack used, so that adding the
// node builds leaves its cached builds (and other checkouts' caches) valid.
func TestControlPlaneInputHashUnchanged(t *testing.T) {
	rel, _ := Lookup(DefaultVersion)
	kube := rel.builds()[0]
	if kube.Name != BuildKube {
		t.Fatalf("the first build is %s, want %s", kube.Name, BuildKube)
	}
	src, err := filepath.Abs("kube")
	if err != nil {
		t.Fatal(err)
	}
	got, err := inputHash(kube, "go1.26.8", kube.LDFlags, nil, []hashedDir{{dir: src}})
	if err != nil {
		t.Fatal(err)
	}
	// The formula as it was: version, go, target, ldflags and components,
	// then every file of the module by its relative path.
	h := sha256.New()
	fmt.Fprintf(h, "version=%s\ngo=%s\ntarget=%s/%s\nldflags=%s\ncomponents=%s\n",
		rel.Version, "go1.26.8", runtime.GOOS, runtime.GOARCH, versionLDFlags(rel), strings.Join(rel.Components, ","))
	for _, n := range []string{"go.mod", "go.sum", "tools.go"} {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", n, len(b))
		h.Write(b)
	}
	if want := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("the control plane's input hash changed formula:\n got %s\nwant %s", got, want)
	}
	ents, _ := os.ReadDir(src)
	if len(ents) != 3 {
		t.Fatalf("images/kube holds %d files; this test hashes go.mod, go.sum and tools.go", len(ents))
	}
}

func TestManifestVerify(t *testing.T) {
	out, m := fakeBuild(t)
	dir := filepath.Join(out, m.KubernetesVersion)
	if err := m.Verify(dir); err != nil {
		t.Fatal(err)
	}
	// A flipped byte is refused with both hashes.
	p := filepath.Join(dir, KubeScheduler)
	b, _ := os.ReadFile(p)
	b[len(b)-2] ^= 1
	os.WriteFile(p, b, 0o755)
	err := m.Verify(dir)
	var ce *ChecksumError
	if !errors.As(err, &ce) || ce.Path != p {
		t.Fatalf("want a checksum error for %s, got %v", p, err)
	}
	want, _ := m.File(KubeScheduler)
	if !strings.Contains(err.Error(), want.SHA256) || !strings.Contains(err.Error(), ce.Got) {
		t.Fatalf("error should name both hashes: %v", err)
	}
	os.Remove(p)
	var me *MissingError
	if err := m.Verify(dir); !errors.As(err, &me) || !strings.Contains(err.Error(), "make kube") {
		t.Fatalf("want a missing-binary error naming the build command, got %v", err)
	}
}

func TestListStates(t *testing.T) {
	out, m := fakeBuild(t)
	dir := filepath.Join(out, m.KubernetesVersion)
	os.Remove(filepath.Join(dir, Kubectl))
	os.WriteFile(filepath.Join(dir, KubeScheduler), []byte("tampered"), 0o755)
	got := map[string]State{}
	for _, e := range List([]string{out}) {
		got[e.Component] = e.State
	}
	want := map[string]State{KubeAPIServer: StatePresent, KubeControllerManager: StatePresent, KubeScheduler: StateMismatch, Kubectl: StateMissing}
	for c, s := range want {
		if got[c] != s {
			t.Errorf("%s: state %s, want %s", c, got[c], s)
		}
	}
}

func TestBundleRoundTrip(t *testing.T) {
	out, m := fakeBuild(t)
	bundle := filepath.Join(t.TempDir(), "b.tar.zst")
	idx, err := Bundle(BundleOptions{Dir: filepath.Join(out, m.KubernetesVersion), Anvil: fakeAnvil(t), AnvilVersion: "v0.1.0", Out: bundle})
	if err != nil {
		t.Fatal(err)
	}
	root := hostfs.Root(t.TempDir())
	got, err := Import(ImportOptions{Bundle: bundle, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Files) != len(idx.Files) {
		t.Fatalf("imported %d files, bundled %d", len(got.Files), len(idx.Files))
	}
	inst, dir, err := Installed(root, m.KubernetesVersion)
	if err != nil {
		t.Fatalf("installed tree does not verify: %v", err)
	}
	for _, f := range m.Files {
		if g, ok := inst.File(f.Name); !ok || g != f {
			t.Errorf("%s: installed %+v, built %+v", f.Name, g, f)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, AnvilBinary)); err != nil {
		t.Errorf("anvil not installed: %v", err)
	}
	// Re-importing replaces the directory in one piece and leaves no staging behind.
	if _, err := Import(ImportOptions{Bundle: bundle, Root: root}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(root.Path(hostfs.BinDir))
	if len(ents) != 1 || ents[0].Name() != m.KubernetesVersion {
		t.Fatalf("left in %s: %v", root.Path(hostfs.BinDir), ents)
	}
}

func TestImageArchivesLoad(t *testing.T) {
	out, m := fakeBuild(t)
	bundle := filepath.Join(t.TempDir(), "b.tar.zst")
	if _, err := Bundle(BundleOptions{Dir: filepath.Join(out, m.KubernetesVersion), Anvil: fakeAnvil(t), Out: bundle}); err != nil {
		t.Fatal(err)
	}
	root := hostfs.Root(t.TempDir())
	if _, err := Import(ImportOptions{Bundle: bundle, Root: root}); err != nil {
		t.Fatal(err)
	}
	rel, _ := Lookup(m.KubernetesVersion)
	for _, c := range append(rel.ControlPlane(), AnvilBinary) {
		archive := filepath.Join(root.Bin(rel.Version), ImagesSubdir, c+".oci.tar")
		dir := t.TempDir()
		untar(t, archive, dir)
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		im, err := idx.IndexManifest()
		if err != nil || len(im.Manifests) != 1 {
			t.Fatalf("%s: index %v %v", c, im, err)
		}
		desc := im.Manifests[0]
		if ref := desc.Annotations[refNameAnnotation]; ref != ImageRef(rel.Version, c) {
			t.Errorf("%s: ref %q, want %q", c, ref, ImageRef(rel.Version, c))
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"/usr/local/bin/" + c}; !slices.Equal(cf.Config.Entrypoint, want) {
			t.Errorf("%s: entrypoint %v, want %v", c, cf.Config.Entrypoint, want)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: layers %v %v", c, layers, err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		found := false
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if h.Name == "usr/local/bin/"+c && h.Mode&0o111 != 0 {
				found = true
			}
		}
		rc.Close()
		if !found {
			t.Errorf("%s: the layer does not hold an executable usr/local/bin/%s", c, c)
		}
	}
}

func TestImportRefusesDamagedBundles(t *testing.T) {
	out, m := fakeBuild(t)
	good := filepath.Join(t.TempDir(), "b.tar.zst")
	if _, err := Bundle(BundleOptions{Dir: filepath.Join(out, m.KubernetesVersion), Anvil: fakeAnvil(t), Out: good}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"truncated":    data[:len(data)*2/3],
		"flipped byte": flip(data, len(data)/2),
		"last byte":    flip(data, len(data)-5),
		"empty":        {},
		"not zstd":     []byte("this is not a bundle"),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.tar.zst")
			os.WriteFile(p, b, 0o644)
			root := hostfs.Root(t.TempDir())
			_, err := Import(ImportOptions{Bundle: p, Root: root})
			var be *BundleError
			if !errors.As(err, &be) {
				t.Fatalf("want a BundleError, got %v", err)
			}
			// Nothing written: not even the bin directory's contents.
			if ents, _ := os.ReadDir(root.Path(hostfs.BinDir)); len(ents) != 0 {
				t.Fatalf("import left %v behind", ents)
			}
		})
	}
}

// TestImportChecksExpectedSHA256: with --sha256, a bundle that is whole
// but not the one expected (another build, someone else's) is refused
// before it is read, and the expected one installs.
func TestImportChecksExpectedSHA256(t *testing.T) {
	out, m := fakeBuild(t)
	good := filepath.Join(t.TempDir(), "b.tar.zst")
	if _, err := Bundle(BundleOptions{Dir: filepath.Join(out, m.KubernetesVersion), Anvil: fakeAnvil(t), Out: good}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	root := hostfs.Root(t.TempDir())
	for _, want := range []string{strings.Repeat("ab", 32), "nothex"} {
		_, err := Import(ImportOptions{Bundle: good, Root: root, SHA256: want})
		if err == nil {
			t.Fatalf("sha256 %s: imported", want)
		}
		if ents, _ := os.ReadDir(root.Path(hostfs.BinDir)); len(ents) != 0 {
			t.Fatalf("a refused import left %v", ents)
		}
	}
	var be *BundleError
	if _, err := Import(ImportOptions{Bundle: good, Root: root, SHA256: strings.Repeat("ab", 32)}); !errors.As(err, &be) || !strings.Contains(err.Error(), hex.EncodeToString(sum[:])) {
		t.Errorf("another bundle: %v, want a BundleError naming its sha256", err)
	}
	if _, err := Import(ImportOptions{Bundle: good, Root: root, SHA256: strings.ToUpper(hex.EncodeToString(sum[:]))}); err != nil {
		t.Fatalf("the expected bundle: %v", err)
	}
}

func TestInstall(t *testing.T) {
	out, m := fakeBuild(t)
	root := hostfs.Root(t.TempDir())
	from := filepath.Join(out, m.KubernetesVersion)
	if _, err := Install(InstallOptions{From: from, Anvil: fakeAnvil(t), Root: root}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Installed(root, m.KubernetesVersion); err != nil {
		t.Fatal(err)
	}
	// A tampered source is refused and the installed tree is untouched.
	os.WriteFile(filepath.Join(from, KubeAPIServer), []byte("evil"), 0o755)
	var ce *ChecksumError
	if _, err := Install(InstallOptions{From: from, Root: root}); !errors.As(err, &ce) {
		t.Fatalf("want a checksum error, got %v", err)
	}
	if _, _, err := Installed(root, m.KubernetesVersion); err != nil {
		t.Fatalf("installed tree damaged by a refused install: %v", err)
	}
}

// TestBuiltBinariesReportPinnedVersion checks the real build (make kube):
// every component says the pinned version, not v0.0.0-master.
func TestBuiltBinariesReportPinnedVersion(t *testing.T) {
	dir := filepath.Join("..", "bin", "kube", DefaultVersion)
	m, err := ReadManifest(dir)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs the built components (make kube): %v", err)
		}
		t.Skipf("no build in %s (run make kube): %v", dir, err)
	}
	if err := m.Verify(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		args := []string{"--version"}
		if f.Name == Kubectl {
			args = []string{"version", "--client"}
		}
		out, err := exec.Command(filepath.Join(dir, f.Name), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", f.Name, args, err, out)
		}
		if !strings.Contains(string(out), DefaultVersion) || strings.Contains(string(out), "master") {
			t.Errorf("%s --version printed %q, want %s", f.Name, strings.TrimSpace(string(out)), DefaultVersion)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := slices.Clone(b)
	c[i] ^= 0x40
	return c
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		w, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(w, tr)
		w.Close()
	}
}

func TestListOlderReleaseOnlyWherePresent(t *testing.T) {
	out := t.TempDir()
	versions := func() []string {
		var vs []string
		for _, e := range List([]string{out}) {
			if !slices.Contains(vs, e.Version) {
				vs = append(vs, e.Version)
			}
		}
		return vs
	}
	if got := versions(); !slices.Equal(got, []string{DefaultVersion}) {
		t.Fatalf("an empty directory lists %v, want only the default %s", got, DefaultVersion)
	}
	older := Releases()[len(Releases())-1].Version
	if err := os.Mkdir(filepath.Join(out, older), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := versions(); !slices.Contains(got, older) {
		t.Fatalf("with %s/ built, the list shows %v", older, got)
	}
}

// Every release's Kubernetes builds have their own module, which pins
// that release's version: a build would refuse otherwise, and an older
// release must never share (and so change) the newest's module.
func TestEveryReleaseHasItsKubernetesModules(t *testing.T) {
	seen := map[string]string{}
	for _, rel := range Releases() {
		for _, b := range rel.builds()[:2] {
			if other, ok := seen[b.Module]; ok {
				t.Errorf("%s and %s share images/%s", rel.Version, other, b.Module)
			}
			seen[b.Module] = rel.Version
			if _, err := pinnedModule(b.Module, b.Upstream, rel.Version); err != nil {
				t.Errorf("%s: %v", rel.Version, err)
			}
		}
	}
}

func TestCheckUpgrade(t *testing.T) {
	for _, tt := range []struct {
		from, to string
		rollback bool
		want     string // in the error; "" for none
	}{
		{"v1.36.3", "v1.37.2", false, ""},
		{"v1.37.2", "v1.37.2", false, ""},
		{"v1.37.2", "v1.36.3", false, "downgrade across minors"},
		{"v1.37.2", "v1.36.3", true, ""},
		{"v1.35.4", "v1.37.2", false, "not supported"},
		{"v1.37.2", "v1.38.0", false, "not supported"},
	} {
		err := CheckUpgrade(tt.from, tt.to, tt.rollback)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s → %s (rollback %v): %v, want %q", tt.from, tt.to, tt.rollback, err, tt.want)
		}
	}
	// The policy itself, on versions whatever the support table holds.
	for _, tt := range []struct {
		from, to string
		rollback bool
		want     string
	}{
		{"v1.35.4", "v1.37.2", false, "skips a minor: the control plane upgrades one minor at a time (to v1.36 first)"},
		{"v1.36.1", "v1.36.3", false, ""},
		{"v1.36.3", "v1.36.1", false, ""},
		{"v1.37.2", "v1.35.4", true, "downgrade across minors"},
		{"v1.37.2", "v2.0.0", false, "major"},
	} {
		err := checkSkew(tt.from, tt.to, tt.rollback)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("skew %s → %s (rollback %v): %v, want %q", tt.from, tt.to, tt.rollback, err, tt.want)
		}
	}
}
