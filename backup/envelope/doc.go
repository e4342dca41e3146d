// Package envelope is the file format of an anvil backup: one stream,
// written and read in one pass, with a clear header anyone can read, a
// body that age encrypts when the backup has recipients (age keeps it
// secret and detects damage; it does not say who wrote it: anyone with the
// recipients' public keys, which every header prints, can write a backup
// that reads),
// zstd compression, the carried files, the etcd snapshot and a seal with
// the snapshot's size and sha256. Every layer has its own check, and a
// reader reports which one failed (*EnvelopeError with the Err* kinds).
//
// The package knows nothing of etcd servers, masters or where files live:
// it reads and writes bytes, and is fuzzed (FuzzEnvelope) because it parses
// files that may come from anyone.
package envelope
