// Package supervise is the process layout's supervisor: anvil itself runs
// the components (etcd, the apiserver, the controller-manager, the
// scheduler, the agent) on machines without systemd, and in fast tests.
//
// One supervisor runs per root, detached in its own session so it outlives
// the command that started it. Its life cycle:
//
//	Start ─► lock + PID file ─► kill stale children ─► start specs in
//	dependency order (a process starts once what it requires is ready)
//	  ▲                                   │ exits: restart, doubling backoff
//	  └── SIGHUP: rescan specs: start new, stop removed, restart changed
//	SIGTERM ─► stop every process in reverse order ─► remove PID/status
//
// It never decides what runs: master and agent declare the components,
// package component renders their specs.
package supervise
