// Package lab makes bare-metal-like machines on one Linux host, for people
// trying anvil and for every end-to-end test: real Debian with systemd as
// PID 1 and sshd, each machine with its own address on a private bridge.
//
// What it owns, and how it is made:
//
//   - The base: Debian bookworm debootstrapped once (minbase plus systemd,
//     dbus, sshd, iproute2, ping, procps, sudo, and what a node's runtime
//     calls: iptables, nftables, conntrack, netbase, kmod) into
//     /var/cache/anvil/lab/base-STAMP, where STAMP hashes the package list
//     and the recipe. A lock file keeps concurrent `up`s from building it
//     twice. It carries no identity: no host keys, an empty machine-id. Its
//     oneshot anvil-lab-cgroups.service makes the machine's cgroup v1
//     hierarchies writable at boot, before sysinit.target, containerd and
//     the kubelet.
//   - A machine: an overlay of its own writable layer over the base (never
//     a copy), holding its hostname, machine-id, fresh ed25519 host key and
//     the lab's authorized key; booted by systemd-nspawn, detached, in its
//     own session and mount namespace, and in cgroups of its own in every
//     hierarchy of the host (anvil-lab/LAB/MACHINE under each v1
//     controller, name=systemd and unified), which its cgroup namespace
//     shows it as its root. The overlay is mounted in that namespace only,
//     so the host never sees a lab mount and a killed machine leaves none
//     behind. What a Kubernetes node needs of it: /dev/kmsg and CAP_SYSLOG,
//     the keyring system calls, a writable /proc/sys/net, and
//     /var/lib/containerd bound from a host directory (containerd's overlay
//     snapshotter cannot stack on the overlay root).
//   - The host's kernel settings the kubelet needs and a machine cannot
//     set (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1):
//     global to the host, so set when a machine boots and none are set,
//     said on the progress output, recorded with their previous values in
//     STATEDIR/.host-sysctls.json, and restored by the `down` that leaves no
//     lab on the host, whoever made the others.
//   - The network: one bridge per lab (anvbHASH) with the lab's first
//     address, and per machine a network namespace with eth0 at its static
//     address, whose veth peer (anvmHASH) sits on the bridge; all made with
//     netlink. Interface names hash the lab and machine names, so any two
//     labs coexist, and carry an alias (anvil-lab:LAB/MACHINE) saying whose
//     they are. Machines have no default route: lab traffic never leaves
//     the bridge. The subnet is a /24 of 10.213.0.0/16 that overlaps none
//     of the host's routes or addresses, or one given.
//   - The lab's files, under /var/lib/anvil/lab/LAB: state.json, the SSH
//     key pair, known_hosts, a cluster file for `anvil cluster apply` (with
//     two masters or more, HA: the subnet's free .5 is controlPlane.vip and
//     the endpoint), and per machine its writable layer and containerd
//     directory (machines/MACHINE/upper, machines/MACHINE/containerd).
//
// Lifecycle of a machine:
//
//	(none) --up--> booting --sshd answers with the known key, systemd running--> running
//	running --stop--> stopped (tree, address, host key kept) --start--> booting
//	running --cut--> running, link down --heal--> running
//	booting --dies before it is ready--> stopped, its cgroups removed
//	any --down--> (none): processes, cgroups, links, mounts and files gone;
//	              the host's kernel settings back once no lab is left
//
// Down finds what to remove from the state file, from the machines'
// cgroups (anvil-lab/LAB/MACHINE), from the processes' environment and
// from the interface aliases, so it also cleans up after a crash.
//
// It never gives a machine anything a real host would not have beyond what
// running inside systemd-nspawn takes, and never touches a machine, bridge
// or cgroup of a lab it did not make.
package lab
