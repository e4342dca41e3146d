// Package fsutil writes files the way every part of anvil must: atomically
// (temp file + fsync + rename), with an explicit mode, so a crash or a failed
// run never leaves a half-written certificate, unit or manifest behind.
package fsutil
