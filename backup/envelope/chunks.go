package envelope

import (
	"bufio"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
)

// The payload's framing: chunks with a CRC-32C each, then an end marker with
// the total, so that damage and truncation are told apart without the key.

// chunkWriter cuts the payload into chunks, each with its CRC-32C, and ends
// it with a zero length and the total.
type chunkWriter struct {
	w io.Writer
	// buf is room for the chunk's header, then its payload so far.
	buf   []byte
	total uint64
	table *crc32.Table
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := copy(c.buf[len(c.buf):cap(c.buf)], p)
		c.buf = c.buf[:len(c.buf)+k]
		p, n = p[k:], n+k
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == chunkHeader {
		return nil
	}
	// The chunk's header goes in front of its payload, so that one write
	// carries both.
	payload := c.buf[chunkHeader:]
	binary.BigEndian.PutUint32(c.buf[:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(c.buf[4:chunkHeader], crc32.Checksum(payload, c.table))
	if _, err := c.w.Write(c.buf); err != nil {
		return err
	}
	c.total += uint64(len(payload))
	c.buf = c.buf[:chunkHeader]
	return nil
}

func (c *chunkWriter) Close() error {
	if err := c.flush(); err != nil {
		return err
	}
	var end [12]byte
	binary.BigEndian.PutUint64(end[4:], c.total)
	_, err := c.w.Write(end[:])
	return err
}

// newChunkReader reads the payload of a backup of the given format from r,
// which is positioned after the clear header.
func newChunkReader(r *bufio.Reader, format uint16) *chunkReader {
	c := &chunkReader{r: r, table: crcTable()}
	if format >= 2 {
		c.sigLen = SignatureSize
	}
	return c
}

// chunkReader reads the payload's chunks, checking each CRC, and reports
// a damaged or truncated payload as such; its error is kept, because the
// layers above (age, zstd) may not pass it on intact.
type chunkReader struct {
	r *bufio.Reader
	// sigLen is how many bytes of signature follow the end marker.
	sigLen int
	buf    []byte
	off    int
	total  uint64
	chunks int
	ended  bool
	err    error
	table  *crc32.Table
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.err != nil {
			return 0, c.err
		}
		if c.ended {
			return 0, io.EOF
		}
		c.err = c.next()
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

func (c *chunkReader) next() error {
	short := func(err error, where string) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return NewError(ErrTruncatedBackup, "payload", "the file ends %s, %d bytes into the payload (chunk %d)", where, c.total, c.chunks+1)
		}
		return err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return short(err, "before the payload's end marker")
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		var tot [8]byte
		if _, err := io.ReadFull(c.r, tot[:]); err != nil {
			return short(err, "inside the payload's end marker")
		}
		if got := binary.BigEndian.Uint64(tot[:]); got != c.total {
			return NewError(ErrCorruptBackup, "payload", "the end marker counts %d payload bytes, the chunks hold %d", got, c.total)
		}
		if c.sigLen > 0 {
			sig := make([]byte, c.sigLen)
			if _, err := io.ReadFull(c.r, sig); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return NewError(ErrTruncatedBackup, "signature", "the file ends inside the signature after the payload")
				}
				return err
			}
		}
		if _, err := c.r.ReadByte(); err == nil {
			return NewError(ErrCorruptBackup, "end", "data after the end of the payload")
		} else if !errors.Is(err, io.EOF) {
			return err
		}
		c.ended = true
		c.buf, c.off = c.buf[:0], 0
		return nil
	}
	if n > MaxPayloadChunk {
		return NewError(ErrCorruptBackup, "payload", "chunk %d at payload byte %d claims %d bytes, more than %d", c.chunks+1, c.total, n, MaxPayloadChunk)
	}
	var sum [4]byte
	if _, err := io.ReadFull(c.r, sum[:]); err != nil {
		return short(err, "inside a chunk header")
	}
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	c.buf, c.off = c.buf[:n], 0
	if _, err := io.ReadFull(c.r, c.buf); err != nil {
		c.buf = c.buf[:0]
		return short(err, "inside a chunk")
	}
	if got, want := crc32.Checksum(c.buf, c.table), binary.BigEndian.Uint32(sum[:]); got != want {
		c.buf = c.buf[:0]
		return NewError(ErrCorruptBackup, "payload", "chunk %d (payload bytes %d to %d) fails its CRC-32C: %08x, recorded %08x", c.chunks+1, c.total, c.total+uint64(n), got, want)
	}
	c.total += uint64(n)
	c.chunks++
	return nil
}
