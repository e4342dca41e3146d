// Package human formats quantities for people: the one place anvil turns
// a byte count into "117.4 MiB", so every command says sizes alike.
//
// It never parses: input sizes are the cluster file's (api/v1alpha1).
package human
