package installer

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
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/internal/sshx"
)

// Phase upload: what each host needs of the build, by its role and
// runtime (bundle.forHost), into /opt/anvil/bin/<version>/, and the
// cluster file's image archives into /var/lib/anvil/images on hosts that
// run pods, each only when the host's copy differs by sha256 (computed on
// the host, never trusted from size or mtime), compressed in transit,
// verified on the host before it is renamed into place; then
// manifest.json and the links (binaries in /usr/local/bin, CNI plugins in
// /opt/cni/bin, the build's image archives in /var/lib/anvil/images).

// upload is what one host lacks.
type upload struct {
	anvil bool
	// files are the build's files and the cluster file's archives.
	files    []bundleFile
	manifest bool
	links    []hostLink
}

func (u upload) empty() bool {
	return !u.anvil && len(u.files) == 0 && !u.manifest && len(u.links) == 0
}

// diff compares what a host should have with what facts found there.
func (p *hostPayload) diff(f *Facts, version string) upload {
	var u upload
	for _, bf := range p.files {
		if f.Installed[bf.Name] == bf.SHA256 {
			continue
		}
		if bf.Name == images.AnvilBinary {
			u.anvil = true
		} else {
			u.files = append(u.files, bf)
		}
	}
	for _, a := range p.archives {
		if f.Archives[a.Name] != a.SHA256 {
			u.files = append(u.files, a)
		}
	}
	u.manifest = !bytes.Equal(f.Manifest, p.manifest)
	for _, l := range p.links {
		if f.Links[l.path()] != l.target(version) {
			u.links = append(u.links, l)
		}
	}
	return u
}

func planUpload(r *run) plan {
	b := r.apply.bundle
	var pl plan
	for _, h := range r.alive() {
		p, err := b.forHost(h.Host)
		if err != nil {
			pl.steps = append(pl.steps, step{host: h, do: "upload what the host needs", run: func(context.Context) (string, error) { return "", err }})
			continue
		}
		u := p.diff(h.facts, b.version)
		if u.empty() {
			pl.steps = append(pl.steps, step{host: h, do: fmt.Sprintf("nothing to upload: all %d files match by sha256, links in place", len(p.files)+len(p.archives))})
			continue
		}
		if u.anvil {
			how := anvilCodec(h.facts)
			pl.steps = append(pl.steps, step{host: h,
				do:  fmt.Sprintf("upload anvil (%s, %s) %s", human.Bytes(b.anvil.Size), hasWhat(h.facts, b.anvil), how),
				run: func(ctx context.Context) (string, error) { return r.uploadAnvil(ctx, h, how) }})
		}
		if len(u.files) > 0 || u.manifest || len(u.links) > 0 {
			pl.steps = append(pl.steps, step{host: h, do: describeUpload(u),
				run: func(ctx context.Context) (string, error) { return r.sendStream(ctx, h, p.manifest, u) }})
		}
	}
	return pl
}

func anvilCodec(f *Facts) codec {
	if f.HasZstd {
		return codecZstd
	}
	return codecGzip
}

func hasWhat(f *Facts, bf bundleFile) string {
	if _, ok := f.Installed[bf.Name]; ok {
		return "the host has another build"
	}
	return "the host has none"
}

func describeUpload(u upload) string {
	var parts []string
	if len(u.files) > 0 {
		var names []string
		var size int64
		for _, bf := range u.files {
			names = append(names, bf.Name)
			size += bf.Size
		}
		parts = append(parts, fmt.Sprintf("upload %s (%s, zstd)", strings.Join(names, ", "), human.Bytes(size)))
	}
	if u.manifest {
		parts = append(parts, "write "+images.ManifestFile)
	}
	byDir := map[string][]string{}
	var dirs []string
	for _, l := range u.links {
		if _, ok := byDir[l.dir]; !ok {
			dirs = append(dirs, l.dir)
		}
		byDir[l.dir] = append(byDir[l.dir], path.Base(l.name))
	}
	for _, d := range dirs {
		parts = append(parts, fmt.Sprintf("link %s in %s", strings.Join(byDir[d], ", "), d))
	}
	return strings.Join(parts, "; ")
}

// uploadAnvil installs anvil itself with the host's own tools, since
// nothing of anvil runs there yet: decompress into a temporary file, check
// its sha256, rename it into place.
func (r *run) uploadAnvil(ctx context.Context, h *host, how codec) (string, error) {
	b := r.apply.bundle
	f := b.anvil
	p, zsize, err := r.apply.compressor.compressed(ctx, f, how)
	if err != nil {
		return "", err
	}
	src, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer src.Close()
	decompress := "gzip -dc"
	if how == codecZstd {
		decompress = "zstd -dcq"
	}
	d := binDir(b.version)
	script := strings.Join([]string{
		"set -eu", "umask 022",
		"mkdir -p " + sshx.ShellQuote(d),
		"t=$(mktemp " + sshx.ShellQuote(d+"/.anvil.upload-XXXXXX") + ")",
		`trap 'rm -f "$t"' EXIT`,
		decompress + ` > "$t"`,
		`s=$(sha256sum "$t" | cut -c1-64)`,
		fmt.Sprintf(`if [ "$s" != %s ]; then echo "anvil arrived with sha256 $s, not %s; nothing was replaced" >&2; exit 1; fi`, f.SHA256, f.SHA256),
		`chmod 0755 "$t"`,
		`mv -f "$t" ` + sshx.ShellQuote(anvilOn(b.version)),
		"trap - EXIT",
	}, "; ")
	in := r.meter(h, "anvil", zsize, src)
	if err := r.runLogged(ctx, h, "install anvil", script, in, nil); err != nil {
		return "", err
	}
	return fmt.Sprintf("anvil: sent %s for %s, sha256 verified on the host", human.Bytes(zsize), human.Bytes(f.Size)), nil
}

var errStoppedReading = errors.New("the host stopped reading the upload")

// receiveCommand is `anvil cluster helper receive` of version on a host:
// the version directory, the archives' directory and every link
// directory.
func receiveCommand(version string) string {
	args := []string{anvilOn(version), "cluster", "helper", "receive", "--dir", binDir(version), "--file-dir", imagesDir}
	for _, d := range slices.Sorted(maps.Values(linkDirs())) {
		args = append(args, "--link-dir", d)
	}
	return shellJoin(append(args, "--cache", hashCacheFile))
}

// sendStream streams the files, the host's manifest and the links to
// `anvil cluster helper receive` on the host.
func (r *run) sendStream(ctx context.Context, h *host, manifest []byte, u upload) (string, error) {
	b := r.apply.bundle
	cmd := receiveCommand(b.version)
	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	var wire int64
	go func() {
		var err error
		wire, err = writeStream(ctx, pw, r.apply.compressor, manifest, u, func(name string, total int64, rd io.Reader) io.Reader {
			return r.meter(h, name, total, rd)
		})
		pw.CloseWithError(err)
		sent <- err
	}()
	var out bytes.Buffer
	err := r.runLogged(ctx, h, "anvil cluster helper receive", cmd, pr, &out)
	pr.CloseWithError(errStoppedReading)
	// When the stream could not be written (a binary no longer matches
	// its manifest), that is the cause of whatever the host said.
	if serr := <-sent; serr != nil && !errors.Is(serr, errStoppedReading) {
		return "", serr
	}
	if err != nil {
		return "", err
	}
	got := map[string]Received{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var rc Received
		if json.Unmarshal(sc.Bytes(), &rc) == nil && rc.Op == "file" {
			got[path.Join(rc.Dir, rc.Name)] = rc
		}
	}
	var raw int64
	for _, f := range u.files {
		if got[path.Join(f.dir, f.Name)].SHA256 != f.SHA256 {
			return "", fmt.Errorf("the host did not confirm %s with sha256 %s", f.hostPath(b.version), f.SHA256)
		}
		raw += f.Size
	}
	return fmt.Sprintf("sent %s for %s: %d files%s, %d links, sha256 verified on the host", human.Bytes(wire), human.Bytes(raw), len(u.files), map[bool]string{true: " + manifest", false: ""}[u.manifest], len(u.links)), nil
}

// writeStream writes the upload stream for u: each file from the
// compressor's cache (read through meter), then the manifest, the links
// and the end. It returns the bytes written.
func writeStream(ctx context.Context, w io.Writer, comp *compressor, manifest []byte, u upload, meter func(name string, total int64, r io.Reader) io.Reader) (int64, error) {
	var wire int64
	header := func(rec record) error {
		j, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		n, err := w.Write(append(j, '\n'))
		wire += int64(n)
		return err
	}
	for _, f := range u.files {
		p, zsize, err := comp.compressed(ctx, f, codecZstd)
		if err != nil {
			return wire, err
		}
		if err := header(record{Op: "file", Name: f.Name, Dir: f.dir, Size: f.Size, SHA256: f.SHA256, Mode: f.mode(), ZSize: zsize}); err != nil {
			return wire, err
		}
		src, err := os.Open(p)
		if err != nil {
			return wire, err
		}
		n, err := io.Copy(w, meter(f.Name, zsize, src))
		src.Close()
		wire += n
		if err != nil {
			return wire, err
		}
	}
	if u.manifest {
		z, err := zstdBytes(manifest)
		if err != nil {
			return wire, err
		}
		if err := header(record{Op: "file", Name: images.ManifestFile, Size: int64(len(manifest)), SHA256: sha256Hex(manifest), Mode: 0o644, ZSize: int64(len(z))}); err != nil {
			return wire, err
		}
		n, err := io.Copy(w, meter(images.ManifestFile, int64(len(z)), bytes.NewReader(z)))
		wire += n
		if err != nil {
			return wire, err
		}
	}
	for _, l := range u.links {
		if err := header(record{Op: "link", Name: l.name, Dir: l.dir}); err != nil {
			return wire, err
		}
	}
	return wire, header(record{Op: "end"})
}

func zstdBytes(b []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil), nil
}

// meter counts what is read through it as uploaded bytes and shows the
// progress of the file on the host's row.
func (r *run) meter(h *host, name string, total int64, rd io.Reader) io.Reader {
	return &meterReader{r: rd, fn: func(n int64, done int64) {
		r.apply.addUploaded(n)
		h.task.Detail("%s %s / %s", name, human.Bytes(done), human.Bytes(total))
	}}
}

type meterReader struct {
	r    io.Reader
	fn   func(n, done int64)
	done int64
	mu   sync.Mutex
}

func (m *meterReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if n > 0 {
		m.mu.Lock()
		m.done += int64(n)
		done := m.done
		m.mu.Unlock()
		m.fn(int64(n), done)
	}
	return n, err
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
