package grpccodec

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Name is the codec's name on the wire: it encodes exactly as gRPC's
// protobuf codec does, so either end may use the other.
const Name = "proto"

// Codec marshals protobuf messages with buffers from its own pool.
type Codec struct {
	pool mem.BufferPool
}

// New returns a codec with a pool of its own.
func New() *Codec {
	// The buffer sizes, as powers of two: gRPC's, plus 64 KiB.
	pool, err := mem.NewBinaryTieredBufferPool(8, 12, 14, 15, 16, 20)
	if err != nil {
		// The tiers are constants; an error is a programming error.
		panic(fmt.Sprintf("grpccodec: buffer pool: %v", err))
	}
	return &Codec{pool: pool}
}

var _ encoding.CodecV2 = (*Codec)(nil)

// Name implements encoding.CodecV2.
func (c *Codec) Name() string { return Name }

// Marshal implements encoding.CodecV2.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	m := message(v)
	if m == nil {
		return nil, fmt.Errorf("grpccodec: cannot marshal %T: not a protobuf message", v)
	}
	size := proto.Size(m)
	// The size was just computed and m is not changing under us.
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal implements encoding.CodecV2.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m := message(v)
	if m == nil {
		return fmt.Errorf("grpccodec: cannot unmarshal into %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func message(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV2:
		return v
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	}
	return nil
}

// DialOption makes a client connection use a new Codec for every call.
func DialOption() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.ForceCodecV2(New()))
}

// ServerOption makes a server use a new Codec.
func ServerOption() grpc.ServerOption {
	return grpc.ForceServerCodecV2(New())
}
