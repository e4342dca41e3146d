package installer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/fsutil"
)

// codec is how a file is compressed in transit.
type codec string

const (
	// codecZstd is for everything `anvil cluster helper receive`
	// unpacks, and for anvil itself on hosts that have zstd.
	codecZstd codec = "zstd"
	// codecGzip is for anvil itself on a host without zstd: gzip is on
	// every Linux, and anvil is what decompresses everything after it.
	codecGzip codec = "gzip"
)

// compressor compresses each file once per (content, codec) into a cache
// on the workstation, shared by every host of a run and by later runs:
// uploading to five hosts costs one compression, and re-applying to a new
// lab none.
type compressor struct {
	dir  string
	mu   sync.Mutex
	jobs map[string]*compressJob
}

type compressJob struct {
	done chan struct{}
	path string
	size int64
	err  error
}

func newCompressor(dir string) (*compressor, error) {
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("no cache directory for compressed uploads: %w", err)
		}
		dir = filepath.Join(base, "anvil", "upload")
	}
	return &compressor{dir: dir, jobs: map[string]*compressJob{}}, nil
}

// compressed returns the cached compressed form of f, making it first if
// needed; concurrent callers for the same file wait for one compression.
// The source is checked against f.SHA256 while it is read: a binary that
// no longer matches its manifest is never shipped.
func (c *compressor) compressed(ctx context.Context, f bundleFile, how codec) (string, int64, error) {
	key := f.SHA256 + "." + string(how)
	c.mu.Lock()
	j, ok := c.jobs[key]
	if !ok {
		j = &compressJob{done: make(chan struct{})}
		c.jobs[key] = j
		go func() {
			defer close(j.done)
			j.path, j.size, j.err = c.make(ctx, f, how, filepath.Join(c.dir, key))
		}()
	}
	c.mu.Unlock()
	select {
	case <-j.done:
		return j.path, j.size, j.err
	case <-ctx.Done():
		return "", 0, ctx.Err()
	}
}

func (c *compressor) make(ctx context.Context, f bundleFile, how codec, dst string) (string, int64, error) {
	if fi, err := os.Stat(dst); err == nil && fi.Size() > 0 {
		return dst, fi.Size(), nil
	}
	src, err := os.Open(f.path)
	if err != nil {
		return "", 0, err
	}
	defer src.Close()
	pr, pw := io.Pipe()
	h := sha256.New()
	go func() {
		in := io.TeeReader(&ctxReader{ctx: ctx, r: src}, h)
		var w io.WriteCloser
		var err error
		switch how {
		case codecGzip:
			w, err = gzip.NewWriterLevel(pw, gzip.BestSpeed)
		default:
			w, err = zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedDefault))
		}
		if err == nil {
			_, err = io.Copy(w, in)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}()
	var size int64
	err = fsutil.WriteFrom(dst, &countReader{r: pr, n: &size}, 0o600, 0o700)
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		return "", 0, fmt.Errorf("compress %s: %w", f.path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		os.Remove(dst)
		return "", 0, &images.ChecksumError{Path: f.path, Want: f.SHA256, Got: got}
	}
	return dst, size, nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// countReader counts what is read through it.
type countReader struct {
	r io.Reader
	n *int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}
