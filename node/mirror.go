package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// The image mirror. Archives imported into containerd (ImportImages) let
// pods run without a registry, except a pod whose image pull policy is
// Always: for it the kubelet asks containerd to pull, and containerd asks
// the image's registry for the tag's digest, which an air-gapped node
// cannot reach. So the agent serves the images it imported, read-only, with
// the pull half of the registry API on loopback, and containerd's registry
// hosts configuration (a hosts.toml per registry in RegistryHostsDir) lists
// it first for the registries those images name. Such a pull then resolves
// to the manifest containerd already holds and fetches nothing. A name the
// mirror does not serve gets 404, and containerd goes on to the registry
// itself, as it would without the mirror.
//
// The mirror serves only images an archive in ImagesDir names, and of
// those only the manifests, configs and layers their tags reach: never
// another blob of containerd's content store (an image pulled with a
// registry's credentials, say).

// MirrorPort is the image mirror's port, on 127.0.0.1 of every node that
// runs pods. 10264 follows the VIP's and the approver's health ports.
const MirrorPort = 10264

// RegistryHostsDir is containerd's registry hosts directory (its
// config_path): the agent writes <host>/hosts.toml there for the
// registries the mirror serves. Operators may add their own for others.
const RegistryHostsDir = "/etc/containerd/certs.d"

// contentBlobsDir holds containerd's content store, one file per blob
// named by its digest: blobs/sha256/<hex>.
const contentBlobsDir = ContainerdRootDir + "/io.containerd.content.v1.content/blobs"

// hostsFileHeader starts every hosts.toml the agent writes; a file without
// it is an operator's, which the agent neither changes nor removes.
const hostsFileHeader = "# Written by anvil's agent: the images imported from archives are served by this node's image mirror."

// maxManifestSize bounds a manifest or index read into memory; registries
// refuse bigger ones too.
const maxManifestSize = 4 << 20

// MirrorAddress is where the mirror listens.
func MirrorAddress() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(MirrorPort)) }

// MirroredImage is one image the mirror serves: its full name
// (registry.k8s.io/pause:3.10.1) and the manifest or index it points at.
type MirroredImage struct {
	Name      string
	MediaType string
	Digest    string
}

// descriptor is the part of an OCI descriptor the mirror reads.
type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// mirrorRepo is what the mirror serves of one repository
// (registry.k8s.io/e2e-test-images/agnhost).
type mirrorRepo struct {
	tags      map[string]descriptor // tag → manifest or index
	manifests map[string]descriptor // digest → every manifest and index the tags reach
	blobs     map[string]descriptor // digest → every config and layer they reach
}

// Mirror serves images from containerd's content store with the
// registry API's GET and HEAD requests, as containerd asks a mirror for
// them (the registry's name in the ns parameter). It is safe for
// concurrent use; Set replaces what it serves while it serves.
type Mirror struct {
	blobsDir string

	mu    sync.RWMutex
	repos map[string]*mirrorRepo
}

// NewMirror returns a mirror of the content store of the containerd under
// root; it serves nothing until Set.
func NewMirror(root hostfs.Root) *Mirror {
	return &Mirror{blobsDir: root.Path(contentBlobsDir), repos: map[string]*mirrorRepo{}}
}

// Set makes the mirror serve imgs, and nothing else. Each image's manifest
// (and an index's manifests that are in the store: one platform's, as a
// rule) is read from the content store and checked against its digest. An
// image whose manifest is missing or damaged is left out and named in the
// error; the others are served.
func (m *Mirror) Set(imgs []MirroredImage) error {
	repos := map[string]*mirrorRepo{}
	var errs []error
	for _, img := range imgs {
		repo, tag, err := splitImageName(img.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r := repos[repo]
		if r == nil {
			r = &mirrorRepo{tags: map[string]descriptor{}, manifests: map[string]descriptor{}, blobs: map[string]descriptor{}}
		}
		d := descriptor{MediaType: img.MediaType, Digest: img.Digest}
		if err := m.walk(r, &d, 0); err != nil {
			errs = append(errs, fmt.Errorf("image %s: %w", img.Name, err))
			continue
		}
		r.tags[tag] = d
		repos[repo] = r
	}
	m.mu.Lock()
	m.repos = repos
	m.mu.Unlock()
	return errors.Join(errs...)
}

// Images counts the tags the mirror serves.
func (m *Mirror) Images() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := 0
	for _, r := range m.repos {
		n += len(r.tags)
	}
	return n
}

// walk records the manifest or index d and what it reaches in r; d's size
// is filled in from the blob.
func (m *Mirror) walk(r *mirrorRepo, d *descriptor, depth int) error {
	if depth > 2 {
		return fmt.Errorf("manifest %s: indexes nested too deep", d.Digest)
	}
	b, err := m.readManifest(d.Digest)
	if err != nil {
		return err
	}
	d.Size = int64(len(b))
	var man struct {
		MediaType string       `json:"mediaType"`
		Config    *descriptor  `json:"config"`
		Layers    []descriptor `json:"layers"`
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(b, &man); err != nil {
		return fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	if d.MediaType == "" {
		d.MediaType = man.MediaType
	}
	if d.MediaType == "" {
		return fmt.Errorf("manifest %s has no media type", d.Digest)
	}
	r.manifests[d.Digest] = *d
	for _, c := range man.Manifests {
		if !validDigest(c.Digest) {
			return fmt.Errorf("index %s names a manifest %q that is not a sha256 digest", d.Digest, c.Digest)
		}
		if _, err := os.Stat(m.blobPath(c.Digest)); err != nil {
			continue // another platform's, never pulled here
		}
		if err := m.walk(r, &c, depth+1); err != nil {
			return err
		}
	}
	blobs := man.Layers
	if man.Config != nil {
		blobs = append(blobs, *man.Config)
	}
	for _, l := range blobs {
		if !validDigest(l.Digest) {
			return fmt.Errorf("manifest %s names a blob %q that is not a sha256 digest", d.Digest, l.Digest)
		}
		r.blobs[l.Digest] = l
	}
	return nil
}

// readManifest reads a manifest or index from the content store and checks
// its digest.
func (m *Mirror) readManifest(digest string) ([]byte, error) {
	if !validDigest(digest) {
		return nil, fmt.Errorf("%q is not a sha256 digest", digest)
	}
	f, err := os.Open(m.blobPath(digest))
	if err != nil {
		return nil, fmt.Errorf("manifest %s is not in containerd's content store: %w", digest, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", digest, err)
	}
	if len(b) > maxManifestSize {
		return nil, fmt.Errorf("manifest %s is over %d bytes", digest, maxManifestSize)
	}
	if sum := sha256.Sum256(b); "sha256:"+hex.EncodeToString(sum[:]) != digest {
		return nil, fmt.Errorf("manifest %s in containerd's content store does not match its digest", digest)
	}
	return b, nil
}

func (m *Mirror) blobPath(digest string) string {
	return filepath.Join(m.blobsDir, "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// validDigest accepts sha256:<64 lower-case hex digits> only, so a digest
// from a request can name no other file than a blob's.
func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ServeHTTP answers GET and HEAD of /v2/, /v2/<name>/manifests/<tag or
// digest> and /v2/<name>/blobs/<digest>, with <name> under the registry
// the ns parameter names, as containerd asks a mirror.
func (m *Mirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		registryError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this mirror is read-only")
		return
	}
	if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		registryError(w, http.StatusNotFound, "NOT_FOUND", "not a registry API path")
		return
	}
	name, ref, kind := "", "", ""
	for _, k := range []string{"manifests", "blobs"} {
		if i := strings.LastIndex(rest, "/"+k+"/"); i > 0 {
			name, ref, kind = rest[:i], rest[i+len(k)+2:], k
			break
		}
	}
	ns := r.URL.Query().Get("ns")
	if kind == "" || ns == "" {
		registryError(w, http.StatusNotFound, "NAME_UNKNOWN", "the mirror serves manifests and blobs of the registry named by the ns parameter")
		return
	}
	m.mu.RLock()
	repo := m.repos[ns+"/"+name]
	var d descriptor
	found := false
	if repo != nil {
		switch {
		case kind == "blobs":
			d, found = repo.blobs[ref]
			if !found {
				// a manifest fetched as a blob, as some clients do
				d, found = repo.manifests[ref]
			}
		case validDigest(ref):
			d, found = repo.manifests[ref]
		default:
			d, found = repo.tags[ref]
		}
	}
	m.mu.RUnlock()
	if !found {
		code := "MANIFEST_UNKNOWN"
		if kind == "blobs" {
			code = "BLOB_UNKNOWN"
		}
		registryError(w, http.StatusNotFound, code, fmt.Sprintf("%s/%s: %s is not served here", ns, name, ref))
		return
	}
	f, err := os.Open(m.blobPath(d.Digest))
	if err != nil {
		registryError(w, http.StatusNotFound, "BLOB_UNKNOWN", fmt.Sprintf("%s is not in containerd's content store", d.Digest))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || (d.Size > 0 && fi.Size() != d.Size) {
		registryError(w, http.StatusNotFound, "BLOB_UNKNOWN", fmt.Sprintf("%s in containerd's content store is not the size its manifest says", d.Digest))
		return
	}
	ct := "application/octet-stream"
	if kind == "manifests" {
		ct = d.MediaType
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Docker-Content-Digest", d.Digest)
	w.Header().Set("Etag", `"`+d.Digest+`"`)
	http.ServeContent(w, r, "", time.Time{}, f)
}

func registryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// splitImageName splits a full image name into its repository (registry
// and path) and tag.
func splitImageName(name string) (repo, tag string, err error) {
	if strings.Contains(name, "@") {
		return "", "", fmt.Errorf("image %s: the mirror serves tags, not digest references", name)
	}
	i := strings.LastIndex(name, ":")
	if i < 0 || strings.Contains(name[i:], "/") || !strings.Contains(name[:i], "/") {
		return "", "", fmt.Errorf("image %s is not a full name with a tag (registry/path:tag)", name)
	}
	return name[:i], name[i+1:], nil
}

// ImageRegistry is the registry a full image name starts with.
func ImageRegistry(name string) string {
	host, _, _ := strings.Cut(name, "/")
	return host
}

// ContainerdImages lists the named images in containerd's k8s.io namespace
// (not the sha256: names the CRI adds) with the manifest each points at.
func ContainerdImages(ctx context.Context, ctr, address string) ([]MirroredImage, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, ctr, "--address", address, "-n", ImageNamespace, "images", "ls")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list containerd's images: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return parseImageList(out)
}

// parseImageList reads `ctr images ls`: a header, then REF TYPE DIGEST and
// more columns, separated by blanks.
func parseImageList(out []byte) ([]MirroredImage, error) {
	var imgs []MirroredImage
	sc := bufio.NewScanner(bytes.NewReader(out))
	header := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if header {
			if len(f) < 3 || f[0] != "REF" || f[1] != "TYPE" || f[2] != "DIGEST" {
				return nil, fmt.Errorf("containerd's image list starts with %q, not REF TYPE DIGEST", sc.Text())
			}
			header = false
			continue
		}
		if len(f) < 3 || strings.HasPrefix(f[0], "sha256:") {
			continue
		}
		imgs = append(imgs, MirroredImage{Name: f[0], MediaType: f[1], Digest: f[2]})
	}
	return imgs, sc.Err()
}

// WriteRegistryHosts has containerd ask the mirror first for the images of
// each registry in registries: it writes RegistryHostsDir/<registry>/
// hosts.toml for each, and removes those it wrote before for registries no
// longer listed. A hosts.toml the agent did not write is an operator's: it
// stays as it is, and its registry is named in the error.
func WriteRegistryHosts(root hostfs.Root, registries []string) error {
	dir := root.Path(RegistryHostsDir)
	var errs []error
	for _, reg := range registries {
		if !validRegistryHost(reg) {
			errs = append(errs, fmt.Errorf("registry %q: not a host name with an optional port; no hosts.toml written for it", reg))
			continue
		}
		file := filepath.Join(dir, reg, "hosts.toml")
		old, err := os.ReadFile(file)
		if err == nil && !bytes.HasPrefix(old, []byte(hostsFileHeader)) {
			errs = append(errs, fmt.Errorf("%s was not written by anvil: containerd uses it for %s, and the image mirror is not asked for that registry's images", file, reg))
			continue
		}
		want := registryHostsFile()
		if bytes.Equal(old, want) {
			continue
		}
		if err := fsutil.WriteFile(file, want, 0o644, 0o755); err != nil {
			errs = append(errs, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		if !e.IsDir() || slices.Contains(registries, e.Name()) {
			continue
		}
		file := filepath.Join(dir, e.Name(), "hosts.toml")
		if old, err := os.ReadFile(file); err != nil || !bytes.HasPrefix(old, []byte(hostsFileHeader)) {
			continue
		}
		if err := os.Remove(file); err != nil {
			errs = append(errs, err)
			continue
		}
		_ = os.Remove(filepath.Dir(file)) // only when empty
	}
	return errors.Join(errs...)
}

// registryHostsFile names the mirror as the first host to resolve and pull
// from; without a server line containerd goes on to the registry's own
// default host, as it does with no hosts.toml at all.
func registryHostsFile() []byte {
	return []byte(hostsFileHeader + `
# It answers for those images only; containerd then asks the registry itself.
# Rewritten when the imported images change; removed when none is from this registry.

[host."http://` + MirrorAddress() + `"]
  capabilities = ["pull", "resolve"]
`)
}

// validRegistryHost accepts a host name or address with an optional port:
// it becomes a directory name.
func validRegistryHost(h string) bool {
	if h == "" || h == "." || h == ".." || len(h) > 253 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == ':', c == '_':
		default:
			return false
		}
	}
	return true
}
