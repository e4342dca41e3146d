// Package etcd is anvil's side of etcd: the member anvil embeds (Serve,
// which `anvil etcd --config FILE` runs: etcd's own embed package, refusing
// any configuration without mutual TLS), the client masters reach members
// with (Dial, with the healthcheck client certificate), and membership:
// listing members with their health, quorum arithmetic that refuses a change
// which would cost quorum (*QuorumError), removing members, comparing every
// member's HashKV (CheckConsistency), and the one flow by which a member
// joins a running cluster (Learner: add as a learner, start, promote once
// caught up, withdraw on failure).
//
// It never decides what runs on a machine or where files are: package
// master writes the member's configuration and starts it.
package etcd
