package installer

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
)

// testVersion is the version fake builds are of: one images knows, so
// images.Install takes them.
const testVersion = v1alpha1.DefaultKubernetesVersion

// fakeBuild writes a build directory of testVersion with small files in
// the payload's shape — control plane, node stack, CNI plugins, image
// archives — and loads it as apply does, with this test binary as anvil
// (an executable for this machine).
func fakeBuild(t testing.TB) *bundle {
	t.Helper()
	kube := t.TempDir()
	dir := filepath.Join(kube, testVersion)
	payload := &images.Manifest{KubernetesVersion: testVersion, EtcdVersion: "v3.7.3", InputHash: "sha256:x",
		Builds: []images.BuildRecord{{Name: "kube", Version: testVersion, InputHash: "sha256:y"}}}
	for _, f := range []struct {
		name string
		set  images.Set
	}{
		{"kube-apiserver", images.SetControlPlane},
		{"kubectl", images.SetControlPlane},
		{"kubelet", images.SetNode},
		{"containerd", images.SetNode},
		{"cni/bridge", images.SetNode},
		{"images/pause.tar", images.SetNode},
	} {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("the "+f.name), 0o755); err != nil {
			t.Fatal(err)
		}
		sum, size, err := images.HashFile(p)
		if err != nil {
			t.Fatal(err)
		}
		payload.Files = append(payload.Files, images.File{Name: f.name, SHA256: sum, Size: size, Set: f.set})
	}
	if err := images.WritePayload(dir, payload); err != nil {
		t.Fatal(err)
	}
	anvil, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadBundle(anvil, []string{kube}, testVersion)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func names(files []bundleFile) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.Name)
	}
	return out
}

func linkPaths(links []hostLink) []string {
	var out []string
	for _, l := range links {
		out = append(out, l.path()+" -> "+l.target(testVersion))
	}
	return out
}

func TestForHost(t *testing.T) {
	b := fakeBuild(t)
	d := binDir(testVersion)
	for _, tc := range []struct {
		name  string
		host  v1alpha1.Host
		files []string
		links []string
	}{
		{"master", v1alpha1.Host{Name: "m1", Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeContainerd},
			[]string{"anvil", "kube-apiserver", "kubectl", "kubelet", "containerd", "cni/bridge", "images/pause.tar"},
			[]string{
				hostfs.LinkDir + "/anvil -> " + d + "/anvil",
				hostfs.LinkDir + "/kube-apiserver -> " + d + "/kube-apiserver",
				hostfs.LinkDir + "/kubectl -> " + d + "/kubectl",
				hostfs.LinkDir + "/kubelet -> " + d + "/kubelet",
				hostfs.LinkDir + "/containerd -> " + d + "/containerd",
				"/opt/cni/bin/bridge -> " + d + "/cni/bridge",
				"/var/lib/anvil/images/pause.tar -> " + d + "/images/pause.tar",
			}},
		// A worker gets no control-plane file.
		{"worker", v1alpha1.Host{Name: "w1", Role: v1alpha1.RoleWorker, Runtime: v1alpha1.RuntimeContainerd},
			[]string{"anvil", "kubelet", "containerd", "cni/bridge", "images/pause.tar"},
			[]string{
				hostfs.LinkDir + "/anvil -> " + d + "/anvil",
				hostfs.LinkDir + "/kubelet -> " + d + "/kubelet",
				hostfs.LinkDir + "/containerd -> " + d + "/containerd",
				"/opt/cni/bin/bridge -> " + d + "/cni/bridge",
				"/var/lib/anvil/images/pause.tar -> " + d + "/images/pause.tar",
			}},
		// A host that runs no pods gets no node file.
		{"master without a runtime", v1alpha1.Host{Name: "m1", Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeNone},
			[]string{"anvil", "kube-apiserver", "kubectl"},
			[]string{
				hostfs.LinkDir + "/anvil -> " + d + "/anvil",
				hostfs.LinkDir + "/kube-apiserver -> " + d + "/kube-apiserver",
				hostfs.LinkDir + "/kubectl -> " + d + "/kubectl",
			}},
		{"worker without a runtime", v1alpha1.Host{Name: "w1", Role: v1alpha1.RoleWorker, Runtime: v1alpha1.RuntimeNone},
			[]string{"anvil"},
			[]string{hostfs.LinkDir + "/anvil -> " + d + "/anvil"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := b.forHost(tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(p.files); !slices.Equal(got, tc.files) {
				t.Errorf("files %q, want %q", got, tc.files)
			}
			if got := linkPaths(p.links); !slices.Equal(got, tc.links) {
				t.Errorf("links\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.links, "\n"))
			}
			for _, f := range p.files {
				want := uint32(0o755)
				if strings.HasPrefix(f.Name, "images/") {
					want = 0o644
				}
				if f.mode() != want {
					t.Errorf("%s mode %o", f.Name, f.mode())
				}
			}
		})
	}
}

// The manifest a host gets is the one images.Install writes for its role,
// so images.Installed on the host verifies what apply uploaded.
func TestForHostManifestIsInstalls(t *testing.T) {
	b := fakeBuild(t)
	for _, role := range []v1alpha1.Role{v1alpha1.RoleMaster, v1alpha1.RoleWorker} {
		t.Run(string(role), func(t *testing.T) {
			root := hostfs.Root(t.TempDir())
			if _, err := images.Install(images.InstallOptions{From: b.dir, Role: role, Anvil: b.anvil.path, Root: root}); err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(root.Bin(testVersion), images.ManifestFile))
			if err != nil {
				t.Fatal(err)
			}
			p, err := b.forHost(v1alpha1.Host{Name: "h", Role: role})
			if err != nil {
				t.Fatal(err)
			}
			if string(p.manifest) != string(want) {
				t.Errorf("manifest\n%s\nimages.Install writes\n%s", p.manifest, want)
			}
		})
	}
	// Without the node stack, the host's tree (only what it was sent)
	// still verifies against its manifest.
	p, err := b.forHost(v1alpha1.Host{Name: "m", Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeNone})
	if err != nil {
		t.Fatal(err)
	}
	root := hostfs.Root(t.TempDir())
	dir := root.Bin(testVersion)
	for _, f := range p.files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f.Name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, images.ManifestFile), p.manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := images.Installed(root, testVersion); err != nil {
		t.Errorf("the tree of a master without a runtime does not verify: %v", err)
	}
}

func TestUploadDiff(t *testing.T) {
	b := fakeBuild(t)
	app := writeDockerArchive(t, t.TempDir(), "app.tar", "example.com/app:1")
	b.addArchives([]string{app}, "")
	if len(b.archiveProblems) != 0 {
		t.Fatal(b.archiveProblems)
	}
	p, err := b.forHost(v1alpha1.Host{Name: "w1", Role: v1alpha1.RoleWorker})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(p.archives); !slices.Equal(got, []string{"app.tar"}) || p.archives[0].hostPath(testVersion) != "/var/lib/anvil/images/app.tar" || p.archives[0].mode() != 0o644 {
		t.Fatalf("archives %+v", p.archives)
	}
	// What a host has when everything is in place.
	have := func() *Facts {
		f := &Facts{Installed: map[string]string{}, Archives: map[string]string{}, Links: map[string]string{}, Manifest: p.manifest}
		for _, bf := range p.files {
			f.Installed[bf.Name] = bf.SHA256
		}
		f.Archives["app.tar"] = p.archives[0].SHA256
		for _, l := range p.links {
			f.Links[l.path()] = l.target(testVersion)
		}
		return f
	}
	if u := p.diff(have(), testVersion); !u.empty() {
		t.Errorf("everything in place, yet %+v", u)
	}
	f := have()
	f.Archives["app.tar"] = strings.Repeat("0", 64)
	f.Installed["cni/bridge"] = strings.Repeat("0", 64)
	delete(f.Links, "/var/lib/anvil/images/pause.tar")
	f.Manifest = nil
	u := p.diff(f, testVersion)
	if got := names(u.files); !slices.Equal(got, []string{"cni/bridge", "app.tar"}) || u.anvil || !u.manifest || len(u.links) != 1 || u.links[0].path() != "/var/lib/anvil/images/pause.tar" {
		t.Errorf("upload %+v", u)
	}
	if d := describeUpload(u); !strings.Contains(d, "upload cni/bridge, app.tar") || !strings.Contains(d, "link pause.tar in /var/lib/anvil/images") {
		t.Errorf("described as %q", d)
	}
	// A host that runs no pods gets no archive.
	none, err := b.forHost(v1alpha1.Host{Name: "m1", Role: v1alpha1.RoleMaster, Runtime: v1alpha1.RuntimeNone})
	if err != nil {
		t.Fatal(err)
	}
	if len(none.archives) != 0 {
		t.Errorf("a host without a runtime gets %v", names(none.archives))
	}
}

// What apply streams lands where it should: the build's files in the
// version directory and its subdirectories, the archives in the images
// directory, each link in its own directory.
func TestPayloadRoundTrip(t *testing.T) {
	b := fakeBuild(t)
	b.addArchives([]string{writeDockerArchive(t, t.TempDir(), "app.tar", "example.com/app:1")}, "")
	host := t.TempDir()
	// The host's directories, under host.
	at := func(p string) string { return filepath.Join(host, p) }
	p, err := b.forHost(v1alpha1.Host{Name: "w1", Role: v1alpha1.RoleWorker})
	if err != nil {
		t.Fatal(err)
	}
	u := p.diff(&Facts{}, testVersion)
	for i := range u.files {
		if u.files[i].dir != "" {
			u.files[i].dir = at(u.files[i].dir)
		}
	}
	for i := range u.links {
		u.links[i].dir = at(u.links[i].dir)
	}
	comp, err := newCompressor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var lds []string
	for _, d := range linkDirs() {
		lds = append(lds, at(d))
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := writeStream(context.Background(), pw, comp, p.manifest, u, noMeter)
		pw.CloseWithError(err)
	}()
	dir := at(binDir(testVersion))
	// anvil goes first, on its own (uploadAnvil).
	if u.anvil {
		data, err := os.ReadFile(b.anvil.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, images.AnvilBinary), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := Receive(context.Background(), pr, io.Discard, ReceiveOptions{Dir: dir, FileDirs: []string{at(imagesDir)}, LinkDirs: lds}); err != nil {
		t.Fatal(err)
	}
	for _, f := range u.files {
		where := filepath.Join(dir, f.Name)
		if f.dir != "" {
			where = filepath.Join(f.dir, f.Name)
		}
		if err := f.Verify(where); err != nil {
			t.Error(err)
		}
	}
	for _, l := range u.links {
		if target, err := os.Readlink(filepath.Join(l.dir, path.Base(l.name))); err != nil || target != filepath.Join(dir, l.name) {
			t.Errorf("link %s: %q, %v", l.name, target, err)
		}
	}
	if _, _, err := images.Installed(hostfs.Root(host), testVersion); err != nil {
		t.Errorf("the worker's tree does not verify: %v", err)
	}
}

// TestLoadBundleRefusesHostileNames plays whoever slipped a crafted
// payload.json into the workstation's build directory (an imported bundle,
// a shared cache): apply refuses it whole, naming the entry, before any
// name can reach a host's file system or a script run there.
func TestLoadBundleRefusesHostileNames(t *testing.T) {
	anvil, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a;rm -rf /", "../x", "$(id)", "images/`id`.tar", "cni/../../etc/x", "Kubelet"} {
		t.Run(name, func(t *testing.T) {
			b := fakeBuild(t)
			m, err := images.ReadPayload(b.dir)
			if err != nil {
				t.Fatal(err)
			}
			m.Files = append(m.Files, images.File{Name: name, SHA256: m.Files[0].SHA256, Size: m.Files[0].Size, Set: images.SetNode})
			if err := images.WritePayload(b.dir, m); err != nil {
				t.Fatal(err)
			}
			_, err = loadBundle(anvil, []string{filepath.Dir(b.dir)}, testVersion)
			if err == nil || !strings.Contains(err.Error(), strconv.Quote(name)) {
				t.Fatalf("loadBundle: %v, want an error naming %q", err, name)
			}
		})
	}
}

// TestScriptNamesAreOneWord: the names the facts script loops over reach
// the shell as exactly themselves, and a name that is a command does not
// run.
func TestScriptNamesAreOneWord(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	canary := filepath.Join(t.TempDir(), "ran")
	names := []string{"a;touch " + canary, "$(touch " + canary + ")", "`touch " + canary + "`", "x y", "it's", "../x", "*", "-n"}
	out, err := exec.Command(sh, "-c", `for f in `+quoteAll(names)+`; do printf '%s\0' "$f"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"); !slices.Equal(got, names) {
		t.Errorf("the shell got %q, want %q", got, names)
	}
	if _, err := os.Stat(canary); err == nil {
		t.Error("a name ran as a command")
	}
}
