// Package lab makes bare-metal-like machines on one Linux host, for people
// trying anvil and for every end-to-end test: real Debian with systemd as
// PID 1 and sshd, each machine with its own address on a private bridge.
//
// What it owns, and how it is made:
//
//   - The base: Debian bookworm debootstrapped once (minbase plus systemd,
//     dbus, sshd, iproute2, ping, procps, sudo) into
//     /var/cache/anvil/lab/base-STAMP, where STAMP hashes the package list
//     and the recipe. A lock file keeps concurrent `up`s from building it
//     twice. It carries no identity: no host keys, an empty machine-id.
//   - A machine: an overlay of its own writable layer over the base (never
//     a copy), holding its hostname, machine-id, fresh ed25519 host key and
//     the lab's authorized key; booted by systemd-nspawn, detached, in its
//     own session, cgroups and mount namespace. The overlay is mounted in
//     that namespace only, so the host never sees a lab mount and a killed
//     machine leaves none behind.
//   - The network: one bridge per lab (anvbHASH) with the lab's first
//     address, and per machine a network namespace with eth0 at its static
//     address, whose veth peer (anvmHASH) sits on the bridge; all made with
//     netlink. Interface names hash the lab and machine names, so any two
//     labs coexist, and carry an alias (anvil-lab:LAB/MACHINE) saying whose
//     they are. Machines have no default route: lab traffic never leaves
//     the bridge. The subnet is a /24 of 10.213.0.0/16 that overlaps none
//     of the host's routes or addresses, or one given.
//   - The lab's files, under /var/lib/anvil/lab/LAB: state.json, the SSH
//     key pair, known_hosts and a cluster file for `anvil cluster apply`.
//
// Lifecycle of a machine:
//
//	(none) --up--> booting --sshd answers with the known key, systemd running--> running
//	running --stop--> stopped (tree, address, host key kept) --start--> booting
//	running --cut--> running, link down --heal--> running
//	any --down--> (none): processes, cgroups, links, mounts and files gone
//
// Down finds what to remove from the state file, from the machines'
// cgroups (anvil-lab/LAB/MACHINE), from the processes' environment and
// from the interface aliases, so it also cleans up after a crash.
package lab
