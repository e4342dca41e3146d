package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
)

// fakePayloadBuild lays out a build directory as Build leaves it: stand-ins
// for every file of every build, the control plane's manifest and the
// payload.
func fakePayloadBuild(t *testing.T) (dir string, m *Manifest) {
	t.Helper()
	rel, _ := Lookup(DefaultVersion)
	dir = filepath.Join(t.TempDir(), rel.Version)
	m = &Manifest{KubernetesVersion: rel.Version, EtcdVersion: rel.Etcd, InputHash: "sha256:fake"}
	cp := &Manifest{KubernetesVersion: rel.Version, EtcdVersion: rel.Etcd, InputHash: "sha256:fake"}
	for _, s := range rel.builds() {
		m.Builds = append(m.Builds, BuildRecord{Name: s.Name, Version: s.Version, InputHash: "sha256:" + s.Name})
		for _, n := range s.outputs() {
			p := filepath.Join(dir, filepath.FromSlash(n))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("stand-in for "+n+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			sum, size, err := HashFile(p)
			if err != nil {
				t.Fatal(err)
			}
			f := File{Name: n, SHA256: sum, Size: size, Set: s.Set, Build: s.Name}
			if s.Image != nil {
				f.Image = s.Image.Ref
			}
			m.Files = append(m.Files, f)
			if s.Name == BuildKube {
				cp.Files = append(cp.Files, File{Name: n, SHA256: sum, Size: size})
			}
		}
	}
	if err := WriteManifest(dir, cp); err != nil {
		t.Fatal(err)
	}
	if err := WritePayload(dir, m); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func names(files []File) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.Name)
	}
	return out
}

// nodeSet is what the issue says a worker needs (anvil itself is added by
// whoever installs).
func nodeSet() []string {
	out := []string{Kubelet, KubeProxy, Containerd, ContainerdShim, Ctr, Runc}
	for _, p := range CNIPlugins() {
		out = append(out, CNISubdir+"/"+p)
	}
	return append(out, Crictl, "images/coredns.tar", "images/pause.tar", "images/testapp.tar")
}

func TestForRole(t *testing.T) {
	_, m := fakePayloadBuild(t)
	worker, err := m.ForRole(v1alpha1.RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	got := names(worker)
	want := nodeSet()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("a worker gets\n %v\nwant\n %v", got, want)
	}
	master, err := m.ForRole(v1alpha1.RoleMaster)
	if err != nil {
		t.Fatal(err)
	}
	if len(master) != len(m.Files) {
		t.Errorf("a master gets %d files, the payload has %d", len(master), len(m.Files))
	}
	for _, c := range []string{KubeAPIServer, KubeControllerManager, KubeScheduler, Kubectl} {
		if !slices.Contains(names(master), c) || slices.Contains(names(worker), c) {
			t.Errorf("%s: want it on masters only", c)
		}
	}
	// A manifest from before the node stack has no sets: all control plane.
	old := &Manifest{KubernetesVersion: DefaultVersion, Files: []File{{Name: KubeAPIServer}}}
	if w, _ := old.ForRole(v1alpha1.RoleWorker); len(w) != 0 {
		t.Errorf("an old manifest gives a worker %v", w)
	}
	if ms, _ := old.ForRole(v1alpha1.RoleMaster); len(ms) != 1 {
		t.Errorf("an old manifest gives a master %v", ms)
	}
	var ue *UnknownRoleError
	if _, err := m.ForRole("etcd"); !errors.As(err, &ue) {
		t.Errorf("want an UnknownRoleError, got %v", err)
	}
	sub, err := m.Subset(v1alpha1.RoleWorker)
	if err != nil || sub.Role != v1alpha1.RoleWorker || len(sub.Files) != len(worker) || sub.KubernetesVersion != m.KubernetesVersion {
		t.Errorf("subset %+v %v", sub, err)
	}
	rel, _ := Lookup(DefaultVersion)
	if f, ok := m.Image(rel.PauseImage()); !ok || f.Name != "images/pause.tar" {
		t.Errorf("pause image: %+v %v", f, ok)
	}
}

func TestPayloadTamperRefused(t *testing.T) {
	for _, victim := range []string{CNISubdir + "/portmap", "images/pause.tar", Kubelet} {
		t.Run(victim, func(t *testing.T) {
			dir, m := fakePayloadBuild(t)
			p := filepath.Join(dir, filepath.FromSlash(victim))
			b, _ := os.ReadFile(p)
			b[0] ^= 1
			os.WriteFile(p, b, 0o755)
			var ce *ChecksumError
			if err := m.Verify(dir); !errors.As(err, &ce) || ce.Path != p {
				t.Fatalf("verify: want a checksum error for %s, got %v", p, err)
			}
			root := hostfs.Root(t.TempDir())
			if _, err := Install(InstallOptions{From: dir, Role: v1alpha1.RoleWorker, Root: root}); !errors.As(err, &ce) {
				t.Fatalf("install: want a checksum error, got %v", err)
			}
			if ents, _ := os.ReadDir(root.Path(hostfs.BinDir)); len(ents) != 0 {
				t.Fatalf("a refused install left %v", ents)
			}
			if _, err := Bundle(BundleOptions{Dir: dir, Anvil: fakeAnvil(t), Out: filepath.Join(t.TempDir(), "b.tar.zst")}); !errors.As(err, &ce) {
				t.Fatalf("bundle: want a checksum error, got %v", err)
			}
			got := map[string]State{}
			for _, e := range List([]string{filepath.Dir(dir)}) {
				got[e.Component] = e.State
			}
			if got[victim] != StateMismatch || got[KubeAPIServer] != StatePresent {
				t.Errorf("list: %s is %s, kube-apiserver %s", victim, got[victim], got[KubeAPIServer])
			}
		})
	}
}

func TestInstallForRole(t *testing.T) {
	dir, m := fakePayloadBuild(t)
	for _, role := range []v1alpha1.Role{v1alpha1.RoleWorker, v1alpha1.RoleMaster} {
		t.Run(string(role), func(t *testing.T) {
			root := hostfs.Root(t.TempDir())
			got, err := Install(InstallOptions{From: dir, Role: role, Anvil: fakeAnvil(t), Root: root})
			if err != nil {
				t.Fatal(err)
			}
			want, _ := m.ForRole(role)
			if got.Role != role || len(got.Files) != len(want)+1 || got.Files[len(got.Files)-1].Name != AnvilBinary {
				t.Fatalf("installed manifest: role %q, %v", got.Role, names(got.Files))
			}
			inst, bin, err := Installed(root, m.KubernetesVersion)
			if err != nil {
				t.Fatalf("the installed tree does not verify: %v", err)
			}
			if inst.Role != role {
				t.Errorf("installed manifest says role %q", inst.Role)
			}
			for _, f := range want {
				fi, err := os.Stat(filepath.Join(bin, filepath.FromSlash(f.Name)))
				if err != nil {
					t.Fatal(err)
				}
				wantMode := os.FileMode(0o755)
				if strings.HasPrefix(f.Name, "images/") {
					wantMode = 0o644
				}
				if fi.Mode().Perm() != wantMode {
					t.Errorf("%s: mode %v, want %v", f.Name, fi.Mode().Perm(), wantMode)
				}
			}
			_, err = os.Stat(filepath.Join(bin, KubeAPIServer))
			if role == v1alpha1.RoleWorker && err == nil {
				t.Error("a worker got kube-apiserver")
			}
			// The list of an installed worker names only its files.
			for _, e := range List([]string{root.Path(hostfs.BinDir)}) {
				if e.State != StatePresent {
					t.Errorf("list: %s is %s", e.Component, e.State)
				}
				if role == v1alpha1.RoleWorker && e.Set != SetNode {
					t.Errorf("list of a worker shows %s", e.Component)
				}
			}
			// A second install changes nothing.
			if again, err := Install(InstallOptions{From: dir, Role: role, Anvil: fakeAnvil(t), Root: root}); err != nil || !sameFiles(again, got) {
				t.Fatalf("reinstall: %v", err)
			}
		})
	}
}

func TestBundleCarriesPayload(t *testing.T) {
	dir, m := fakePayloadBuild(t)
	bundle := filepath.Join(t.TempDir(), "b.tar.zst")
	if _, err := Bundle(BundleOptions{Dir: dir, Anvil: fakeAnvil(t), AnvilVersion: "v0.1.0", Out: bundle}); err != nil {
		t.Fatal(err)
	}
	root := hostfs.Root(t.TempDir())
	if _, err := Import(ImportOptions{Bundle: bundle, Root: root}); err != nil {
		t.Fatal(err)
	}
	inst, _, err := Installed(root, m.KubernetesVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		if g, ok := inst.File(f.Name); !ok || g != f {
			t.Errorf("%s: imported %+v, built %+v", f.Name, g, f)
		}
	}
	// What was imported can be installed again for one role.
	w, err := inst.ForRole(v1alpha1.RoleWorker)
	if err != nil || len(w) != len(nodeSet()) {
		t.Errorf("imported payload for a worker: %v %v", names(w), err)
	}
}

// TestBuildModulesMatchPins checks that every build module requires the
// upstream version the release pins, and that go.sum has its checksum.
func TestBuildModulesMatchPins(t *testing.T) {
	rel, _ := Lookup(DefaultVersion)
	for _, s := range rel.builds() {
		if s.Module == "" {
			continue
		}
		sum, err := pinnedModule(s.Module, s.Upstream, s.Version)
		if err != nil {
			t.Errorf("%s: %v", s.Name, err)
			continue
		}
		if !strings.HasPrefix(sum, "h1:") {
			t.Errorf("%s: checksum %q", s.Name, sum)
		}
	}
	if _, err := pinnedModule("containerd", "github.com/containerd/containerd/v2", "v2.4.1"); err == nil || !strings.Contains(err.Error(), "anvil pins v2.4.1") {
		t.Errorf("a mismatched pin: %v", err)
	}
}

// TestOwnProgramsImportOnlyStd: pause's and testapp's input hash covers
// their own directory and go.mod only, which is exact only while they
// import nothing but the standard library.
func TestOwnProgramsImportOnlyStd(t *testing.T) {
	rel, _ := Lookup(DefaultVersion)
	for _, s := range rel.builds() {
		if s.Module != "" {
			continue
		}
		dir := strings.TrimPrefix(s.Packages[0], anvilModule+"/images/")
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		if len(files) == 0 {
			t.Fatalf("%s: no Go files in %s", s.Name, dir)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, im := range af.Imports {
				p, _ := strconv.Unquote(im.Path.Value)
				if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
					t.Errorf("%s imports %s: anvil's image programs may import only the standard library", f, p)
				}
			}
		}
	}
}

// fakeSource makes an images directory with one tiny build module.
func fakeSource(t *testing.T) (src string, specs []buildSpec) {
	t.Helper()
	root := t.TempDir()
	src = filepath.Join(root, "images")
	mod := filepath.Join(src, "hello")
	if err := os.MkdirAll(filepath.Join(mod, "cmd", "hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module example.com/hello\n\ngo 1.26.0\n"), 0o644)
	writeHello(t, src, "hello")
	return src, []buildSpec{{
		Name: "hello", Title: "hello", Version: "v0.0.1", Set: SetNode, Module: "hello",
		Packages: []string{"example.com/hello/cmd/hello"}, Dir: "tools", LDFlags: "-s -w",
	}, {
		Name: "helloimg", Title: "hello image", Set: SetNode, Module: "hello",
		Packages: []string{"example.com/hello/cmd/hello"}, LDFlags: "-s -w",
		Image: &imageSpec{Repo: "localhost/test/hello", User: "65532:65532", Cmd: []string{"serve"}, Ports: []string{"8080/tcp"}},
	}}
}

func writeHello(t *testing.T, src, greeting string) {
	t.Helper()
	p := filepath.Join(src, "hello", "cmd", "hello", "main.go")
	if err := os.WriteFile(p, []byte("package main\n\nfunc main() { println(\""+greeting+"\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBuildReusesByInputHash(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a tiny module")
	}
	src, specs := fakeSource(t)
	cache := filepath.Join(t.TempDir(), "cache")
	out := filepath.Join(t.TempDir(), "out")
	var lines []string
	o := BuildOptions{Version: DefaultVersion, SourceDir: src, OutDir: out, CacheDir: cache, specs: specs,
		Progress: func(s string) { lines = append(lines, s) }}
	hows := func(res *BuildResult) []string {
		var out []string
		for _, b := range res.Builds {
			out = append(out, b.How)
		}
		return out
	}
	first, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := hows(first); !slices.Equal(got, []string{HowBuilt, HowBuilt}) || first.Reused {
		t.Fatalf("first build: %v", got)
	}
	// The payload lists every file with its sha256, set and build.
	p, err := ReadPayload(first.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(p.Files); !slices.Equal(got, []string{"tools/hello", "images/helloimg.tar"}) {
		t.Fatalf("payload files %v", got)
	}
	if err := p.Verify(first.Dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range p.Files {
		if f.Set != SetNode || f.Build == "" {
			t.Errorf("%s: set %q build %q", f.Name, f.Set, f.Build)
		}
	}
	img := p.Files[1].Image
	if !strings.HasPrefix(img, "localhost/test/hello:") || p.Builds[1].Version != strings.TrimPrefix(img, "localhost/test/hello:") {
		t.Errorf("image %q, build version %q", img, p.Builds[1].Version)
	}
	if out, err := exec.Command(filepath.Join(first.Dir, "tools", "hello")).CombinedOutput(); err != nil || string(out) != "hello\n" {
		t.Fatalf("built binary: %q %v", out, err)
	}
	if _, err := ReadManifest(first.Dir); err == nil {
		t.Error("only the control plane's build writes manifest.json")
	}

	// Warm: nothing is rebuilt.
	second, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := hows(second); !second.Reused || !slices.Equal(got, []string{HowCurrent, HowCurrent}) {
		t.Fatalf("second build: %v", got)
	}

	// A fresh output directory comes from the cache, byte for byte.
	o.OutDir = filepath.Join(t.TempDir(), "out2")
	third, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := hows(third); !third.Reused || !slices.Equal(got, []string{HowCached, HowCached}) {
		t.Fatalf("third build: %v", got)
	}
	if third.Manifest.InputHash != first.Manifest.InputHash || !slices.Equal(third.Manifest.Files, first.Manifest.Files) {
		t.Fatalf("the cached build differs:\n%+v\n%+v", third.Manifest.Files, first.Manifest.Files)
	}

	// One damaged file: only its build is redone, from the cache.
	victim := filepath.Join(third.Dir, "tools", "hello")
	os.Remove(victim)
	os.WriteFile(victim, []byte("damaged"), 0o755)
	fourth, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := hows(fourth); !slices.Equal(got, []string{HowCached, HowCurrent}) {
		t.Fatalf("after damage: %v", got)
	}
	if err := fourth.Manifest.Verify(fourth.Dir); err != nil {
		t.Fatal(err)
	}

	// Changed source: a new input hash, so both builds compile again, and
	// the image gets a new tag.
	writeHello(t, src, "hi")
	fifth, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := hows(fifth); !slices.Equal(got, []string{HowBuilt, HowBuilt}) {
		t.Fatalf("after a change: %v", got)
	}
	if fifth.Manifest.Files[1].Image == img {
		t.Error("the image kept its tag across a source change")
	}
	ents, _ := os.ReadDir(cache)
	if len(ents) != 4 {
		t.Errorf("cache holds %d entries, want 4 (two builds by two inputs): %v", len(ents), ents)
	}
	for _, l := range lines {
		if strings.Contains(l, "building") && !strings.Contains(l, "hello") {
			t.Errorf("progress line names no build: %q", l)
		}
	}
}

// TestCacheConcurrentWriters: several builds finishing the same input at
// once (two checkouts' `make kube`) leave one valid entry and no error.
func TestCacheConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	m := &Manifest{InputHash: "sha256:abc", Builds: []BuildRecord{{Name: "x", Version: "v1", InputHash: "sha256:abc"}}}
	for _, n := range []string{"a", "cni/b"} {
		p := filepath.Join(dir, filepath.FromSlash(n))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(n+strings.Repeat("x", 1<<16)), 0o755)
		sum, size, _ := HashFile(p)
		m.Files = append(m.Files, File{Name: n, SHA256: sum, Size: size})
	}
	cache := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = toCache(cache, "x-v1-abc", dir, m)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, ok := fromCache(cache, "x-v1-abc", "sha256:abc", out, []string{"a", "cni/b"}); !ok {
		t.Fatal("the entry does not verify")
	}
	if _, ok := fromCache(cache, "x-v1-abc", "sha256:other", t.TempDir(), []string{"a", "cni/b"}); ok {
		t.Fatal("an entry was used for another input hash")
	}
	ents, _ := os.ReadDir(cache)
	if len(ents) != 1 {
		t.Fatalf("cache holds %v", ents)
	}
	// A damaged entry is replaced, not trusted. (Its files are hard links
	// to the build's: the damage replaces the file, not its bytes.)
	os.Remove(filepath.Join(cache, "x-v1-abc", "a"))
	os.WriteFile(filepath.Join(cache, "x-v1-abc", "a"), []byte("bad"), 0o755)
	if _, ok := fromCache(cache, "x-v1-abc", "sha256:abc", t.TempDir(), []string{"a", "cni/b"}); ok {
		t.Fatal("a damaged entry was used")
	}
	if err := toCache(cache, "x-v1-abc", dir, m); err != nil {
		t.Fatal(err)
	}
	if _, ok := fromCache(cache, "x-v1-abc", "sha256:abc", t.TempDir(), []string{"a", "cni/b"}); !ok {
		t.Fatal("the damaged entry was not replaced")
	}
}

func TestImageArchive(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "coredns")
	os.WriteFile(bin, []byte("\x7fELF not really"), 0o755)
	spec := imageSpec{Ref: "registry.k8s.io/coredns/coredns:v1.14.7", User: "65532:65532", Ports: []string{"53/udp", "53/tcp"}, BindLowPorts: true}
	a, b := filepath.Join(t.TempDir(), "a.tar"), filepath.Join(t.TempDir(), "b.tar")
	for _, out := range []string{a, b} {
		if err := writeImageArchive(imageFiles{bin: bin}, spec, out); err != nil {
			t.Fatal(err)
		}
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Error("the same binary made two different archives")
	}
	cfg, err := ReadImageArchive(a)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Tags, []string{spec.Ref}) || !slices.Equal(cfg.Entrypoint, []string{"/coredns"}) ||
		cfg.User != "65532:65532" || !slices.Equal(cfg.Ports, []string{"53/tcp", "53/udp"}) || !slices.Equal(cfg.Files, []string{"/coredns"}) {
		t.Errorf("read back %+v", cfg)
	}
	// The binary carries cap_net_bind_service=+ep, as setcap writes it.
	tag, _ := name.NewTag(spec.Ref)
	img, err := tarball.ImageFromPath(a, &tag)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	rc, _ := layers[0].Uncompressed()
	defer rc.Close()
	h, err := tar.NewReader(rc).Next()
	if err != nil {
		t.Fatal(err)
	}
	want := "\x01\x00\x00\x02\x00\x04\x00\x00" + strings.Repeat("\x00", 12)
	if got := h.PAXRecords["SCHILY.xattr.security.capability"]; got != want || h.Mode&0o111 == 0 {
		t.Errorf("capability %q mode %o", got, h.Mode)
	}
}

// builtDir is the real build (make kube), for the tests that check what it
// made; under CI it must be there.
func builtDir(t *testing.T) (string, *Manifest) {
	t.Helper()
	dir := filepath.Join("..", "bin", "kube", DefaultVersion)
	m, err := ReadPayload(dir)
	if err == nil && len(m.Builds) == 0 {
		err = errors.New("the build has no payload (built before the node stack)")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs the built payload (make kube): %v", err)
		}
		t.Skipf("no payload in %s (run make kube): %v", dir, err)
	}
	return dir, m
}

// TestBuiltPayload checks the real build: every file of every build is in
// the payload with the right sha256, static, and says its pinned version;
// every image reads back with its name, entrypoint and user.
func TestBuiltPayload(t *testing.T) {
	dir, m := builtDir(t)
	if err := m.Verify(dir); err != nil {
		t.Fatal(err)
	}
	rel, _ := Lookup(DefaultVersion)
	var want []string
	for _, s := range rel.builds() {
		want = append(want, s.outputs()...)
	}
	if got := names(m.Files); !slices.Equal(got, want) {
		t.Fatalf("payload lists\n %v\nwant\n %v", got, want)
	}
	version := map[string][]string{
		Kubelet:        {"--version", rel.Version},
		KubeProxy:      {"--version", rel.Version},
		Containerd:     {"--version", "containerd github.com/containerd/containerd/v2 " + rel.Containerd + " h1:"},
		ContainerdShim: {"-v", rel.Containerd},
		Ctr:            {"--version", rel.Containerd},
		Runc:           {"--version", "runc version " + strings.TrimPrefix(rel.Runc, "v")},
		Crictl:         {"--version", strings.TrimPrefix(rel.CriTools, "v")},
	}
	for _, p := range CNIPlugins() {
		version[CNISubdir+"/"+p] = []string{"", "CNI " + p + " plugin " + rel.CNIPlugins}
	}
	for _, f := range m.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if f.Image != "" {
			continue
		}
		if ef, err := elf.Open(p); err != nil {
			t.Errorf("%s: %v", f.Name, err)
		} else {
			for _, prog := range ef.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked", f.Name)
				}
			}
			ef.Close()
		}
		v, ok := version[f.Name]
		if !ok {
			continue
		}
		var args []string
		if v[0] != "" {
			args = []string{v[0]}
		}
		out, _ := exec.Command(p, args...).CombinedOutput()
		if !strings.Contains(string(out), v[1]) || strings.Contains(string(out), "master") {
			t.Errorf("%s %v printed %q, want %q", f.Name, args, strings.TrimSpace(string(out)), v[1])
		}
	}
	images := map[string]struct {
		entrypoint []string
		user       string
		ports      []string
	}{
		rel.PauseImage():   {[]string{"/pause"}, "65535:65535", nil},
		rel.CoreDNSImage(): {[]string{"/coredns"}, "65532:65532", []string{"53/tcp", "53/udp"}},
	}
	seen := 0
	for _, f := range m.Files {
		if f.Image == "" {
			continue
		}
		seen++
		cfg, err := ReadImageArchive(filepath.Join(dir, filepath.FromSlash(f.Name)))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cfg.Tags, []string{f.Image}) {
			t.Errorf("%s: tags %v, payload says %s", f.Name, cfg.Tags, f.Image)
		}
		w, ok := images[f.Image]
		if !ok {
			if !strings.HasPrefix(f.Image, TestappRepo+":") {
				t.Errorf("%s: unexpected image %s", f.Name, f.Image)
			}
			w.entrypoint, w.user, w.ports = []string{"/testapp"}, "65532:65532", []string{"8080/tcp"}
		}
		if !slices.Equal(cfg.Entrypoint, w.entrypoint) || cfg.User != w.user || !slices.Equal(cfg.Ports, w.ports) || !slices.Equal(cfg.Files, w.entrypoint) {
			t.Errorf("%s: read back %+v", f.Image, cfg)
		}
	}
	if seen != 3 {
		t.Errorf("%d image archives, want 3", seen)
	}
}

// TestBuiltPauseReaps runs the pause binary from the built image archive
// through the same checks as the program's own test.
func TestBuiltPauseReaps(t *testing.T) {
	dir, m := builtDir(t)
	rel, _ := Lookup(DefaultVersion)
	f, ok := m.Image(rel.PauseImage())
	if !ok {
		t.Fatal("no pause image in the payload")
	}
	tag, _ := name.NewTag(f.Image)
	img, err := tarball.ImageFromPath(filepath.Join(dir, filepath.FromSlash(f.Name)), &tag)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	bin := filepath.Join(t.TempDir(), "pause")
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no pause in the image: %v", err)
		}
		if path.Clean("/"+h.Name) == "/pause" {
			b, _ := io.ReadAll(tr)
			os.WriteFile(bin, b, 0o755)
			break
		}
	}
	checkPause(t, bin, rel.Pause)
}

// TestBuiltImagesImportIntoContainerd starts the built containerd on a
// private socket and imports every built image archive with the built ctr,
// as a node does (`ctr -n k8s.io images import`), then checks the names.
func TestBuiltImagesImportIntoContainerd(t *testing.T) {
	dir, m := builtDir(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root, which containerd needs")
		}
		t.Skip("containerd needs root")
	}
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "containerd.sock")
	cfg := filepath.Join(tmp, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version = 3\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n",
		filepath.Join(tmp, "root"), filepath.Join(tmp, "state"), sock)), 0o644)
	var log bytes.Buffer
	daemon := exec.Command(filepath.Join(dir, Containerd), "--config", cfg)
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Signal(sigterm())
		daemon.Wait()
	})
	ctr := func(args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(dir, Ctr), append([]string{"--address", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up:\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var want []string
	for _, f := range m.Files {
		if f.Image == "" {
			continue
		}
		want = append(want, f.Image)
		if out, err := ctr("images", "import", filepath.Join(dir, filepath.FromSlash(f.Name))); err != nil {
			t.Fatalf("import %s: %v\n%s\ncontainerd:\n%s", f.Name, err, out, log.String())
		}
	}
	out, err := ctr("images", "ls", "-q")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := strings.Fields(out)
	for _, ref := range want {
		if !slices.Contains(got, ref) {
			t.Errorf("containerd has %v, not %s", got, ref)
		}
	}
}

func sigterm() os.Signal { return syscall.SIGTERM }
