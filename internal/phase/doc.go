// Package phase runs a command as a list of named phases, the way every
// long anvil command is written: init, control-plane and worker join,
// reset, restore, and the workstation's cluster apply, reset, backup and
// restore. A command declares its flow once, as a literal []Phase a reader
// can follow top down; this package runs it, reports each phase to the
// operator, runs one phase alone when asked, and in a dry run does only
// what changes nothing.
//
// It owns no policy of any command and imports nothing of anvil's but the
// progress reporter.
package phase
