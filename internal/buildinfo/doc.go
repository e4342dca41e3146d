// Package buildinfo carries the version stamped into the anvil binary at link
// time (make sets these with -ldflags -X). They are written by the linker and
// never assigned at run time.
package buildinfo
