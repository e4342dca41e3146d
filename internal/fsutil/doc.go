// Package fsutil writes files the way every part of anvil must: atomically
// (temp file + fsync + rename), with an explicit mode, so a crash or a failed
// run never leaves a half-written certificate, unit or manifest behind.
// Root does the same beneath a host's --root without following a symlink
// out of it.
package fsutil
