// Package grpccodec is gRPC's protobuf codec with a buffer pool whose sizes
// fit etcd's messages.
//
// gRPC's default pool has tiers of 256 B, 4, 16 and 32 KiB and 1 MiB, and
// zeroes a whole buffer when it hands it out. etcd streams a snapshot in
// messages of 32 KiB plus a few bytes of framing, so each one takes a
// 1 MiB buffer: a backup of a 300 MB database cleared about 9 GB of memory
// on each side of the stream. With a 64 KiB tier the same messages clear
// twice their size.
//
// It changes nothing on the wire: the codec has gRPC's name and protobuf's
// format, so either end may use the stock codec.
package grpccodec
