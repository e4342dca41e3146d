package grpccodec_test

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // gRPC's own codec, to compare with
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"anvil.dev/anvil/internal/grpccodec"
)

// TestWireCompatible: what the codec writes, gRPC's protobuf codec reads,
// and the other way round, for messages below and above the pooling
// threshold (a snapshot chunk is 32 KiB and a few bytes).
func TestWireCompatible(t *testing.T) {
	ours := grpccodec.New()
	theirs := encoding.GetCodecV2(grpccodec.Name)
	if theirs == nil || ours.Name() != theirs.Name() {
		t.Fatalf("gRPC's codec %v is not named %q", theirs, grpccodec.Name)
	}
	blob := bytes.Repeat([]byte("etcd"), 32<<10/4)
	for _, msg := range []*pb.SnapshotResponse{
		{RemainingBytes: 7, Blob: []byte("small"), Version: "3.7.0"},
		{RemainingBytes: 1 << 30, Blob: blob, Version: "3.7.0"},
	} {
		for _, dir := range []struct {
			name     string
			enc, dec encoding.CodecV2
		}{{"ours to gRPC's", ours, theirs}, {"gRPC's to ours", theirs, ours}} {
			data, err := dir.enc.Marshal(msg)
			if err != nil {
				t.Fatalf("%s: marshal: %v", dir.name, err)
			}
			want, _ := proto.Marshal(msg)
			if got := data.Materialize(); !bytes.Equal(got, want) {
				t.Errorf("%s: %d bytes on the wire, want protobuf's %d", dir.name, len(got), len(want))
			}
			var got pb.SnapshotResponse
			if err := dir.dec.Unmarshal(data, &got); err != nil {
				t.Fatalf("%s: unmarshal: %v", dir.name, err)
			}
			data.Free()
			if !proto.Equal(&got, msg) {
				t.Errorf("%s: %d-byte blob came back as %d bytes (remaining %d, version %q)", dir.name, len(msg.Blob), len(got.Blob), got.RemainingBytes, got.Version)
			}
		}
	}
}

// TestRefusesNonMessages names the type it cannot handle.
func TestRefusesNonMessages(t *testing.T) {
	c := grpccodec.New()
	if _, err := c.Marshal("not a message"); err == nil {
		t.Error("marshalled a string")
	}
	var s string
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1})}, &s); err == nil {
		t.Error("unmarshalled into a string")
	}
}

// BenchmarkUnmarshalSnapshotChunk is the receiving end of one snapshot
// message: gRPC's codec zeroes a 1 MiB buffer for it, this one 64 KiB.
func BenchmarkUnmarshalSnapshotChunk(b *testing.B) {
	msg := &pb.SnapshotResponse{RemainingBytes: 1 << 30, Blob: bytes.Repeat([]byte{1}, 32<<10), Version: "3.7.0"}
	wire, _ := proto.Marshal(msg)
	for _, c := range []encoding.CodecV2{encoding.GetCodecV2(grpccodec.Name), grpccodec.New()} {
		name := "grpc"
		if _, ok := c.(*grpccodec.Codec); ok {
			name = "anvil"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				var got pb.SnapshotResponse
				// Two frames' worth, as a message arrives: the codec
				// joins them into a buffer from its pool.
				data := mem.BufferSlice{mem.SliceBuffer(wire[:16<<10]), mem.SliceBuffer(wire[16<<10:])}
				if err := c.Unmarshal(data, &got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
