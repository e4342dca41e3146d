// Package component holds the declaration of a program anvil runs — a Spec:
// binary, ordered arguments, environment, the files it reads, ports, health
// probes, user, restart policy and dependencies — in each of the three forms
// anvil runs components in: a systemd unit (go-systemd's unit package), a
// static-pod manifest (a k8s.io/api Pod) or a process spec for anvil's own
// supervisor.
//
// Because every form is computed from the same Spec, the command line a
// component gets cannot drift between layouts; the tests compare the three.
// The systemd form also confines the unit with systemd's sandboxing (see
// Sandbox): it may write only the Files marked Writable and keeps only the
// declared Capabilities, unless the Spec declares it unconfined.
//
// The package decides nothing about what runs: package master declares the
// control-plane components and package agent the node agent. What it owns
// besides the renderers is the policy for merging an operator's extra
// arguments into the declared ones (MergeArgs), and writing or diffing a
// rendered tree of files under a root (WriteTree, DiffTree).
//
// It never starts or stops anything (package layout does).
package component
