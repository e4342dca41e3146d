// Package hostfs names every file anvil owns on a host (shared/DESIGN.md,
// "Files on a host") and prefixes them with --root, so tests and packaging
// can lay out a whole host under a temporary directory.
//
// It never creates, reads or removes a file: it only names them.
package hostfs
