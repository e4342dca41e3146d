package node

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"anvil.dev/anvil/internal/hostfs"
)

// contentStore is a containerd content store in a temporary root.
type contentStore struct {
	t    *testing.T
	root hostfs.Root
}

func newContentStore(t *testing.T) *contentStore {
	root := hostfs.Root(t.TempDir())
	if err := os.MkdirAll(filepath.Join(root.Path(contentBlobsDir), "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &contentStore{t: t, root: root}
}

// add stores b and returns its descriptor.
func (c *contentStore) add(mediaType string, b []byte) descriptor {
	sum := sha256.Sum256(b)
	d := descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
	if err := os.WriteFile(filepath.Join(c.root.Path(contentBlobsDir), "sha256", hex.EncodeToString(sum[:])), b, 0o644); err != nil {
		c.t.Fatal(err)
	}
	return d
}

func (c *contentStore) addJSON(mediaType string, v any) (descriptor, []byte) {
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.add(mediaType, b), b
}

const (
	dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	ociIndex       = "application/vnd.oci.image.index.v1+json"
	ociManifest    = "application/vnd.oci.image.manifest.v1+json"
)

// mirrorFixture is a store with two images, one through an index (with a
// second platform's manifest that is not in the store), and a blob no
// image reaches: a private image's layer, say.
type mirrorFixture struct {
	store                          *contentStore
	mirror                         *Mirror
	manifest, index, layer, config descriptor
	manifestBytes, layerBytes      []byte
	private                        descriptor
}

func newMirrorFixture(t *testing.T) *mirrorFixture {
	s := newContentStore(t)
	f := &mirrorFixture{store: s}
	f.layerBytes = bytes.Repeat([]byte("layer"), 1000)
	f.layer = s.add("application/vnd.docker.image.rootfs.diff.tar.gzip", f.layerBytes)
	f.config, _ = s.addJSON("application/vnd.docker.container.image.v1+json", map[string]string{"architecture": "amd64", "os": "linux"})
	f.manifest, f.manifestBytes = s.addJSON(dockerManifest, map[string]any{
		"schemaVersion": 2, "mediaType": dockerManifest, "config": f.config, "layers": []descriptor{f.layer},
	})
	other := descriptor{MediaType: ociManifest, Digest: "sha256:" + strings.Repeat("ab", 32), Size: 100}
	f.index, _ = s.addJSON(ociIndex, map[string]any{
		"schemaVersion": 2, "mediaType": ociIndex, "manifests": []descriptor{f.manifest, other},
	})
	f.private = s.add("application/octet-stream", []byte("a layer of an image pulled with a registry's credentials"))
	f.mirror = NewMirror(s.root)
	if err := f.mirror.Set([]MirroredImage{
		{Name: "registry.k8s.io/e2e-test-images/agnhost:2.66.1", MediaType: dockerManifest, Digest: f.manifest.Digest},
		{Name: "registry.k8s.io/pause:3.10.2", MediaType: ociIndex, Digest: f.index.Digest},
	}); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMirrorServesImportedImages(t *testing.T) {
	f := newMirrorFixture(t)
	srv := httptest.NewServer(f.mirror)
	defer srv.Close()
	const agnhost = "/v2/e2e-test-images/agnhost"
	ns := "?ns=registry.k8s.io"
	for _, tc := range []struct {
		name, method, path string
		status             int
		digest, mediaType  string
		body               []byte
	}{
		{name: "API version check", method: "GET", path: "/v2/", status: 200},
		{name: "tag resolves", method: "HEAD", path: agnhost + "/manifests/2.66.1" + ns, status: 200, digest: f.manifest.Digest, mediaType: dockerManifest},
		{name: "manifest by digest", method: "GET", path: agnhost + "/manifests/" + f.manifest.Digest + ns, status: 200, digest: f.manifest.Digest, mediaType: dockerManifest, body: f.manifestBytes},
		{name: "layer", method: "GET", path: agnhost + "/blobs/" + f.layer.Digest + ns, status: 200, digest: f.layer.Digest, body: f.layerBytes},
		{name: "config", method: "HEAD", path: agnhost + "/blobs/" + f.config.Digest + ns, status: 200, digest: f.config.Digest},
		{name: "index's tag", method: "HEAD", path: "/v2/pause/manifests/3.10.2" + ns, status: 200, digest: f.index.Digest, mediaType: ociIndex},
		{name: "index's manifest in the store", method: "HEAD", path: "/v2/pause/manifests/" + f.manifest.Digest + ns, status: 200, digest: f.manifest.Digest, mediaType: dockerManifest},
		{name: "index's layer", method: "HEAD", path: "/v2/pause/blobs/" + f.layer.Digest + ns, status: 200},
		{name: "index's other platform, not in the store", method: "HEAD", path: "/v2/pause/manifests/sha256:" + strings.Repeat("ab", 32) + ns, status: 404},
		{name: "unknown tag", method: "HEAD", path: agnhost + "/manifests/9.9" + ns, status: 404},
		{name: "unknown repository", method: "HEAD", path: "/v2/library/busybox/manifests/latest?ns=docker.io", status: 404},
		{name: "other registry, same path", method: "HEAD", path: agnhost + "/manifests/2.66.1?ns=example.com", status: 404},
		{name: "no ns", method: "HEAD", path: agnhost + "/manifests/2.66.1", status: 404},
		{name: "a blob of the store no served image reaches", method: "GET", path: agnhost + "/blobs/" + f.private.Digest + ns, status: 404},
		{name: "a blob of another repository", method: "GET", path: "/v2/pause/blobs/" + f.private.Digest + ns, status: 404},
		{name: "a path for a digest", method: "GET", path: agnhost + "/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd" + ns, status: 404},
		{name: "push", method: "PUT", path: agnhost + "/manifests/2.66.1" + ns, status: 405},
		{name: "upload", method: "POST", path: agnhost + "/blobs/uploads/" + ns, status: 405},
		{name: "delete", method: "DELETE", path: agnhost + "/manifests/" + f.manifest.Digest + ns, status: 405},
		{name: "not the registry API", method: "GET", path: "/etc/passwd", status: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s: status %d, want %d: %s", tc.method, tc.path, resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
				t.Errorf("Docker-Distribution-API-Version %q", got)
			}
			if tc.digest != "" && resp.Header.Get("Docker-Content-Digest") != tc.digest {
				t.Errorf("Docker-Content-Digest %q, want %q", resp.Header.Get("Docker-Content-Digest"), tc.digest)
			}
			if tc.mediaType != "" && resp.Header.Get("Content-Type") != tc.mediaType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.mediaType)
			}
			if tc.body != nil && !bytes.Equal(body, tc.body) {
				t.Errorf("body differs from the blob: %d bytes, want %d", len(body), len(tc.body))
			}
			if tc.status == 404 && bytes.Contains(body, []byte("credentials")) {
				t.Errorf("a refused request got the private blob")
			}
		})
	}

	// containerd fetches layers in ranges when it resumes.
	req, _ := http.NewRequest("GET", srv.URL+agnhost+"/blobs/"+f.layer.Digest+ns, nil)
	req.Header.Set("Range", "bytes=10-19")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, f.layerBytes[10:20]) {
		t.Errorf("range request: status %d, body %q", resp.StatusCode, body)
	}
}

func TestMirrorSetLeavesOutWhatItCannotServe(t *testing.T) {
	f := newMirrorFixture(t)
	// A manifest whose bytes in the store are not its digest's.
	tampered := f.store.add(dockerManifest, []byte(`{"schemaVersion":2}`))
	if err := os.WriteFile(f.mirror.blobPath(tampered.Digest), []byte(`{"schemaVersion":2,"layers":[{"digest":"sha256:`+strings.Repeat("cd", 32)+`"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := f.mirror.Set([]MirroredImage{
		{Name: "registry.k8s.io/e2e-test-images/agnhost:2.66.1", MediaType: dockerManifest, Digest: f.manifest.Digest},
		{Name: "registry.k8s.io/missing:1", MediaType: dockerManifest, Digest: "sha256:" + strings.Repeat("ef", 32)},
		{Name: "registry.k8s.io/tampered:1", MediaType: dockerManifest, Digest: tampered.Digest},
		{Name: "registry.k8s.io/traversal:1", MediaType: dockerManifest, Digest: "sha256:../../../etc/passwd"},
		{Name: "pause:3.10.2", MediaType: dockerManifest, Digest: f.manifest.Digest},
	})
	if err == nil {
		t.Fatal("Set of missing, tampered and badly named images: no error")
	}
	for _, want := range []string{"registry.k8s.io/missing:1", "registry.k8s.io/tampered:1", "does not match its digest", "registry.k8s.io/traversal:1", "pause:3.10.2 is not a full name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if n := f.mirror.Images(); n != 1 {
		t.Errorf("the mirror serves %d images, want the one good one", n)
	}
	// What the previous Set served and this one did not is gone.
	srv := httptest.NewServer(f.mirror)
	defer srv.Close()
	resp, err := srv.Client().Head(srv.URL + "/v2/pause/manifests/3.10.2?ns=registry.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("an image no longer set: status %d", resp.StatusCode)
	}
}

func TestParseImageList(t *testing.T) {
	// As containerd 2.4's ctr prints it (columns padded with blanks).
	out := `REF                                                                     TYPE                                                 DIGEST                                                                  SIZE      PLATFORMS   LABELS
localhost/anvil/testapp:eed680f1bbb2                                    application/vnd.docker.distribution.manifest.v2+json sha256:97d3fc6131220099d4f62cc227ef766b74441ac594b90b56ed57c1c68a8c60a6 3.0 MiB   linux/amd64 io.cri-containerd.image=managed
registry.k8s.io/pause:3.10.1                                            application/vnd.docker.distribution.manifest.v2+json sha256:21e99d3e199e270f97de16ecd4b9689bf350a87a5bd8f3a0f4280f58a389e927 791.4 KiB linux/amd64 io.cri-containerd.image=managed,io.cri-containerd.pinned=pinned
sha256:22141ce425577e221dc7671297e45e4cbcf39437223828a37c50d4ceffe06219 application/vnd.docker.distribution.manifest.v2+json sha256:21e99d3e199e270f97de16ecd4b9689bf350a87a5bd8f3a0f4280f58a389e927 791.4 KiB linux/amd64 io.cri-containerd.image=managed,io.cri-containerd.pinned=pinned
`
	got, err := parseImageList([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []MirroredImage{
		{Name: "localhost/anvil/testapp:eed680f1bbb2", MediaType: dockerManifest, Digest: "sha256:97d3fc6131220099d4f62cc227ef766b74441ac594b90b56ed57c1c68a8c60a6"},
		{Name: "registry.k8s.io/pause:3.10.1", MediaType: dockerManifest, Digest: "sha256:21e99d3e199e270f97de16ecd4b9689bf350a87a5bd8f3a0f4280f58a389e927"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parsed %+v, want %+v", got, want)
	}
	if _, err := parseImageList([]byte("NAME DIGEST\n")); err == nil {
		t.Error("a list with another header parsed")
	}
}

func TestWriteRegistryHosts(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	dir := root.Path(RegistryHostsDir)
	operator := filepath.Join(dir, "docker.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(operator), 0o755); err != nil {
		t.Fatal(err)
	}
	opBytes := []byte("server = \"https://registry-1.docker.io\"\n")
	if err := os.WriteFile(operator, opBytes, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := WriteRegistryHosts(root, []string{"registry.k8s.io", "localhost"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "registry.k8s.io", "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `[host."http://127.0.0.1:10264"]`) || !strings.Contains(string(b), `capabilities = ["pull", "resolve"]`) {
		t.Errorf("hosts.toml does not name the mirror:\n%s", b)
	}
	if strings.Contains(string(b), "server =") {
		t.Errorf("hosts.toml changes the registry's own host:\n%s", b)
	}

	// The operator's file for a registry the mirror serves stays, and the
	// error names it.
	err = WriteRegistryHosts(root, []string{"registry.k8s.io", "docker.io"})
	if err == nil || !strings.Contains(err.Error(), operator) {
		t.Errorf("an operator's hosts.toml: error %v, want one naming %s", err, operator)
	}
	if b, _ := os.ReadFile(operator); !bytes.Equal(b, opBytes) {
		t.Errorf("the operator's hosts.toml changed:\n%s", b)
	}
	// localhost is no longer served: its file and directory are gone; the
	// operator's stays when its registry is not served either.
	if _, err := os.Stat(filepath.Join(dir, "localhost")); !os.IsNotExist(err) {
		t.Errorf("localhost's hosts.toml stayed: %v", err)
	}
	if err := WriteRegistryHosts(root, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "registry.k8s.io")); !os.IsNotExist(err) {
		t.Errorf("registry.k8s.io's hosts.toml stayed: %v", err)
	}
	if b, _ := os.ReadFile(operator); !bytes.Equal(b, opBytes) {
		t.Errorf("the operator's hosts.toml changed:\n%s", b)
	}

	// A registry name that would leave the directory writes nothing.
	for _, bad := range []string{"..", "../etc", "a/b", ""} {
		if err := WriteRegistryHosts(root, []string{bad}); err == nil {
			t.Errorf("registry %q: no error", bad)
		}
	}
	if _, err := os.Stat(root.Path("/etc/hosts.toml")); !os.IsNotExist(err) {
		t.Errorf("a hosts.toml outside the directory: %v", err)
	}
}

func TestArchiveImageNames(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, files map[string]string) string {
		p := filepath.Join(dir, name)
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, n := range slices.Sorted(func(yield func(string) bool) {
			for k := range files {
				if !yield(k) {
					return
				}
			}
		}) {
			if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n]))}); err != nil {
				t.Fatal(err)
			}
			_, _ = tw.Write([]byte(files[n]))
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	docker := write("docker.tar", map[string]string{
		"manifest.json": `[{"Config":"c.json","RepoTags":["registry.k8s.io/e2e-test-images/agnhost:2.66.1","registry.k8s.io/e2e-test-images/agnhost:2.55"],"Layers":["l.tar.gz"]},{"RepoTags":["busybox"]}]`,
	})
	oci := write("oci.tar", map[string]string{
		"oci-layout": `{"imageLayoutVersion":"1.0.0"}`,
		"index.json": `{"manifests":[{"annotations":{"io.containerd.image.name":"localhost/anvil/testapp:1"}},{"annotations":{"org.opencontainers.image.ref.name":"1.2"}},{"annotations":{"org.opencontainers.image.ref.name":"library/nginx:1.27"}}]}`,
	})
	for file, want := range map[string][]string{
		docker: {"docker.io/library/busybox:latest", "registry.k8s.io/e2e-test-images/agnhost:2.55", "registry.k8s.io/e2e-test-images/agnhost:2.66.1"},
		oci:    {"docker.io/library/nginx:1.27", "localhost/anvil/testapp:1"},
	} {
		got, err := ArchiveImageNames(file)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", filepath.Base(file), got, want)
		}
	}
	bad := write("bad.tar", map[string]string{"manifest.json": "not json"})
	if _, err := ArchiveImageNames(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("a damaged manifest.json: %v", err)
	}

	for in, want := range map[string]string{
		"busybox":                         "docker.io/library/busybox:latest",
		"library/busybox:1":               "docker.io/library/busybox:1",
		"localhost/anvil/testapp:1":       "localhost/anvil/testapp:1",
		"localhost:5000/x":                "localhost:5000/x:latest",
		"registry.k8s.io/pause:3.10.1":    "registry.k8s.io/pause:3.10.1",
		"registry.k8s.io/pause@sha256:ab": "registry.k8s.io/pause@sha256:ab",
	} {
		if got := fullImageName(in); got != want {
			t.Errorf("fullImageName(%q) = %q, want %q", in, got, want)
		}
	}
}
