package installer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/klauspost/compress/zstd"

	"anvil.dev/anvil/internal/buildinfo"
	"anvil.dev/anvil/internal/fsutil"
)

// The upload stream is what `anvil cluster helper receive` reads on stdin,
// on the host, from the anvil just installed there: a sequence of records,
// each a JSON header line. A file's header is followed by exactly ZSize
// bytes, one zstd frame holding the file, which is written to a temporary
// file beside its destination, checked against Size and SHA256, synced and
// renamed into place, so a host never runs a half-written binary. Files
// are written in stream order: manifest.json comes last.
//
// A file lands in the version directory (Dir empty; its name may have one
// subdirectory: cni/bridge) or in one of the other directories the
// receiver was given (the image archives' directory; a plain name). A link
// is made in one of the link directories the receiver was given, named
// after the file's base name, pointing into the version directory.

// record is one header of the upload stream.
type record struct {
	Op string `json:"op"` // "file", "link" or "end"
	// Name is a file's name in its directory or, for a link, the name in
	// the version directory it points at.
	Name string `json:"name,omitempty"`
	// Dir is where a file lands when not in the version directory, or the
	// directory a link is made in.
	Dir    string `json:"dir,omitempty"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Mode   uint32 `json:"mode,omitempty"`
	ZSize  int64  `json:"zsize,omitempty"`
}

// Received is what Receive prints, one JSON line per record it completed.
type Received struct {
	Op string `json:"op"`
	// Name and Dir are the record's; for a link, Name is the link's path.
	Name   string `json:"name"`
	Dir    string `json:"dir,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
	// Changed is false for a link that already pointed at its target.
	Changed bool `json:"changed"`
}

// ReceiveOptions say where an upload stream may write.
type ReceiveOptions struct {
	// Dir is the version directory.
	Dir string
	// FileDirs are the other directories files may land in.
	FileDirs []string
	// LinkDirs are the directories links may be made in; a link record
	// without a directory goes in the first.
	LinkDirs []string
	// Cache, when set, is the hash cache each file landed is recorded in
	// (see HashFiles), so the next facts need not hash what was just
	// verified.
	Cache string
}

const (
	maxHeader = 4 << 10
	// maxWindow bounds the memory a frame may make the decoder use.
	maxWindow = 64 << 20
)

// ChecksumMismatchError is a file that arrived other than it was sent.
type ChecksumMismatchError struct {
	Name      string
	Want, Got string
	WantSize  int64
	GotSize   int64
}

func (e *ChecksumMismatchError) Error() string {
	return fmt.Sprintf("%s arrived with sha256 %s (%d bytes), not %s (%d bytes); nothing was replaced", e.Name, e.Got, e.GotSize, e.Want, e.WantSize)
}

// Receive reads an upload stream from in, lands its files in o.Dir (or
// o.FileDirs) and its links in o.LinkDirs, and writes a Received line to
// out for each record. Links are only made or replaced where the path is
// missing or is a link into o.Dir's parent (an anvil version directory):
// anything else is not anvil's and is left alone, with an error.
func Receive(ctx context.Context, in io.Reader, out io.Writer, o ReceiveOptions) error {
	dir := o.Dir
	if dir == "" {
		return errors.New("receive: no version directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hc := loadHashCache(o.Cache)
	br := bufio.NewReaderSize(in, 256<<10)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer dec.Close()
	enc := json.NewEncoder(out)
	changed := map[string]bool{}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := readHeader(br)
		if err != nil {
			return err
		}
		var res Received
		switch rec.Op {
		case "file":
			var dst string
			if dst, err = o.fileDest(rec); err != nil {
				break
			}
			res, err = receiveFile(dec, br, dst, rec)
			changed[filepath.Dir(dst)] = true
			if err == nil {
				hc.put(dst, res.SHA256)
			}
		case "link":
			linkDir := rec.Dir
			if linkDir == "" && len(o.LinkDirs) > 0 {
				linkDir = o.LinkDirs[0]
			}
			if !slices.Contains(o.LinkDirs, linkDir) {
				err = fmt.Errorf("upload stream: links may not be made in %q", rec.Dir)
				break
			}
			res, err = ensureLink(dir, linkDir, rec.Name)
		case "end":
			for _, d := range slices.Sorted(maps.Keys(changed)) {
				if err := syncDir(d); err != nil {
					return err
				}
			}
			return hc.save()
		default:
			err = fmt.Errorf("unknown record %q", rec.Op)
		}
		if err != nil {
			return err
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
}

func readHeader(br *bufio.Reader) (record, error) {
	var rec record
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxHeader {
		return rec, errors.New("upload stream: header too long")
	}
	if err != nil {
		return rec, fmt.Errorf("upload stream ended without its end record: %w", err)
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		return rec, fmt.Errorf("upload stream: bad header: %w", err)
	}
	return rec, nil
}

func validName(name string) bool {
	return name != "" && name == filepath.Base(name) && !strings.HasPrefix(name, ".") && !strings.ContainsAny(name, "/\\\x00")
}

// validVersionName is a name in the version directory: a plain name, or
// one in a subdirectory (cni/bridge, images/pause.tar).
func validVersionName(name string) bool {
	sub, base, nested := strings.Cut(name, "/")
	if !nested {
		return validName(name)
	}
	return validName(sub) && validName(base)
}

// fileDest is where a file record lands: in the version directory, or in
// one of the other directories by its plain name.
func (o ReceiveOptions) fileDest(rec record) (string, error) {
	switch {
	case rec.Dir == "" && validVersionName(rec.Name):
		return filepath.Join(o.Dir, filepath.FromSlash(rec.Name)), nil
	case rec.Dir != "" && slices.Contains(o.FileDirs, rec.Dir) && validName(rec.Name):
		return filepath.Join(rec.Dir, rec.Name), nil
	}
	return "", fmt.Errorf("upload stream: bad file record %+v", rec)
}

// receiveFile lands the file record rec introduces at dst.
func receiveFile(dec *zstd.Decoder, br *bufio.Reader, dst string, rec record) (Received, error) {
	if rec.ZSize < 0 || rec.Size < 0 || !isSHA256(rec.SHA256) {
		return Received{}, fmt.Errorf("upload stream: bad file record %+v", rec)
	}
	frame := &io.LimitedReader{R: br, N: rec.ZSize}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Received{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".upload-*")
	if err != nil {
		return Received{}, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	if err := dec.Reset(frame); err != nil {
		return Received{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(dec, rec.Size+1))
	if err != nil {
		return Received{}, fmt.Errorf("receive %s: %w", rec.Name, err)
	}
	if frame.N > 0 {
		// A frame shorter than its header said: drain it so the error is
		// about this file, not the next header.
		_, _ = io.Copy(io.Discard, frame)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != rec.SHA256 || n != rec.Size {
		return Received{}, &ChecksumMismatchError{Name: rec.Name, Want: rec.SHA256, Got: got, WantSize: rec.Size, GotSize: n}
	}
	mode := fs.FileMode(rec.Mode).Perm()
	if mode == 0 {
		mode = 0o644
	}
	if err := tmp.Chmod(mode); err != nil {
		return Received{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Received{}, err
	}
	if err := tmp.Close(); err != nil {
		return Received{}, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return Received{}, err
	}
	return Received{Op: "file", Name: rec.Name, Dir: rec.Dir, SHA256: got, Size: n, Changed: true}, nil
}

// ensureLink makes linkDir/<base of name> a symlink to dir/name,
// atomically.
func ensureLink(dir, linkDir, name string) (Received, error) {
	if !validVersionName(name) {
		return Received{}, fmt.Errorf("upload stream: bad link name %q", name)
	}
	target := filepath.Join(dir, filepath.FromSlash(name))
	base := path.Base(name)
	link := filepath.Join(linkDir, base)
	res := Received{Op: "link", Name: link}
	if fi, err := os.Stat(target); err != nil || !fi.Mode().IsRegular() {
		return res, fmt.Errorf("link %s: %s is not there", link, target)
	}
	cur, err := os.Readlink(link)
	switch {
	case err == nil && cur == target:
		return res, nil
	case err == nil && !strings.HasPrefix(cur, filepath.Dir(dir)+"/"):
		return res, fmt.Errorf("%s links to %s, which is not anvil's: move it away and apply again", link, cur)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		if _, lerr := os.Lstat(link); lerr == nil {
			return res, fmt.Errorf("%s exists and is not a link anvil made: move it away and apply again", link)
		}
		return res, err
	}
	if err := os.MkdirAll(linkDir, 0o755); err != nil {
		return res, err
	}
	tmp := filepath.Join(linkDir, ".anvil-link-"+base)
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return res, err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return res, err
	}
	res.Changed = true
	return res, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// hashVersionPrefix starts the line HashFiles prints first: the version of
// the anvil that hashed, which is the one installed when it hashed itself.
const hashVersionPrefix = "# anvil "

// HashFiles prints "sha256  path" for each path, like sha256sum, hashing
// several at once, after a line naming this anvil's version.
//
// With cache set, a file whose inode, size, mtime and ctime are those the
// cache recorded with its sha256 is not read again: no write to a file
// leaves its ctime as it was (touch -r restores the mtime, not the
// ctime), so this still decides by content, and a second apply does not
// read half a gigabyte per host. With update, what was hashed is recorded.
func HashFiles(ctx context.Context, out io.Writer, paths []string, cache string, update bool) error {
	fmt.Fprintf(out, "%s%s\n", hashVersionPrefix, buildinfo.Version())
	hc := loadHashCache(cache)
	sums := make([]string, len(paths))
	errs := make([]error, len(paths))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if sum, ok := hc.get(paths[i]); ok {
					sums[i] = sum
					continue
				}
				before := keyOf(paths[i])
				sums[i], errs[i] = hashFile(ctx, paths[i])
				// A file that changed while it was read is hashed again
				// next time.
				if errs[i] == nil && before != nil && keyOf(paths[i]) != nil && *before == *keyOf(paths[i]) {
					hc.put(paths[i], sums[i])
				}
			}
		}()
	}
	for i := range paths {
		work <- i
	}
	close(work)
	wg.Wait()
	for i, p := range paths {
		if errs[i] == nil {
			fmt.Fprintf(out, "%s  %s\n", sums[i], p)
		}
	}
	if update {
		if err := hc.save(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hashCache is what HashFiles and Receive know of files' sha256, by path,
// valid while the file's stat says it is the same file with the same
// content. A missing or unreadable cache is an empty one; a nil cache
// (no file) records nothing.
type hashCache struct {
	path    string
	mu      sync.Mutex
	entries map[string]hashEntry
	dirty   bool
}

type hashEntry struct {
	fileKey
	SHA256 string `json:"sha256"`
}

// fileKey is what changes whenever a file's content may have.
type fileKey struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtimeNs"`
	Ctime int64  `json:"ctimeNs"`
}

func statKey(fi fs.FileInfo) (fileKey, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() {
		return fileKey{}, false
	}
	return fileKey{Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}, true
}

// keyOf is path's key, or nil when it has none.
func keyOf(path string) *fileKey {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	k, ok := statKey(fi)
	if !ok {
		return nil
	}
	return &k
}

func loadHashCache(path string) *hashCache {
	if path == "" {
		return nil
	}
	c := &hashCache{path: path, entries: map[string]hashEntry{}}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &c.entries)
	}
	return c
}

func (c *hashCache) get(path string) (string, bool) {
	if c == nil {
		return "", false
	}
	k := keyOf(path)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.entries[path]
	if k == nil || !found || e.fileKey != *k || !isSHA256(e.SHA256) {
		return "", false
	}
	return e.SHA256, true
}

func (c *hashCache) put(path, sum string) {
	k := keyOf(path)
	if c == nil || k == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[path] = hashEntry{fileKey: *k, SHA256: sum}
	c.dirty = true
}

// save writes the cache back when something was recorded, atomically.
func (c *hashCache) save() error {
	if c == nil || !c.dirty {
		return nil
	}
	for p := range c.entries {
		if keyOf(p) == nil {
			delete(c.entries, p) // gone: an older version's file
		}
	}
	b, err := json.Marshal(c.entries)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(c.path, b, 0o600, 0o755); err != nil {
		return fmt.Errorf("write hash cache %s: %w", c.path, err)
	}
	return nil
}

func hashFile(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", fmt.Errorf("read %s: %w", p, err)
		}
	}
}
