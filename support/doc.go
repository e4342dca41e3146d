// Package support makes a machine's support bundle (`anvil support-bundle`):
// one tar.gz holding what someone helping with a broken node asks for
// first — anvil and component versions, `anvil status`, the states and
// recent journal of every unit anvil declares (or the supervisor's status
// and logs in the process layout), etcd membership, certificate expiry,
// kernel and cgroup facts, anvil's configuration files and, on a master,
// the cluster's Nodes and events.
//
// Every byte that enters an archive goes through Redact first: private
// keys, bootstrap tokens, kubeconfig credentials, the encryption config's
// secrets and age identities never leave the machine. Merge re-applies it
// when `anvil cluster support-bundle` gathers the hosts' archives, so a
// host's older anvil cannot leak what this one would hide.
//
// The package never writes on the host it looks at, never starts or
// stops anything, and does no SSH (the installer carries the stream).
package support
