// Command anvil is anvil's one binary. This package only wires cobra
// commands: each command reads its flags into an options struct, calls one
// function of the package that owns the work (master, agent, backup,
// installer, images, lab, pki, etcd), and prints the result for people or
// as JSON (-o json). Progress goes to stderr through internal/progress;
// results go to stdout. It holds no policy and no package-level state, and
// only main exits.
package main
