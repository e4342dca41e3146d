// Package cis checks a master against the CIS Kubernetes Benchmark
// (v1.10.0): every item of sections 1.1 to 1.4 (the control plane's files,
// the apiserver, the controller-manager, the scheduler) and 2 (etcd), each
// an item number, its title, whether the benchmark calls it automated, and
// a check over Facts, a snapshot of the machine: the command lines of the
// running components (/proc/PID/cmdline), the files their flags and
// anvil's layouts name (modes and owners), and what the benchmark asks of
// their configuration files. An item passes, fails, is an exception anvil
// makes on purpose (with the reason written beside it), or is left to a
// person's judgement (INFO).
//
// Gather reads the facts through a Host: ShellHost runs POSIX shell
// commands through whatever runs them (SSH to a lab machine, sh on this
// one). The package owns the benchmark's table and its report; it never
// changes the machine it looks at, and it does not know how anvil decides
// what runs (it is checked against what is running).
package cis
