// Package agent is the node agent every machine runs (`anvil agent`) and
// the worker join (`anvil join`): discovery with a pinned CA, then client
// certificates through the CSR API with a bootstrap token that is never
// written down.
//
// What the agent does depends on whether the machine runs pods
// (agent.yaml's runtime):
//
//   - runtime containerd: the kubelet (package node, installed by join's
//     node phase) registers the Node, renews its Lease and posts its
//     status. The agent runs the host-gw pod network (package podnet) on a
//     client-go clientset over its own rotating certificate, and imports
//     every image archive that appears in /var/lib/anvil/images into
//     containerd's k8s.io namespace.
//   - runtime none: the agent itself registers the Node, renews its Lease
//     as the heartbeat and reports the machine's facts, with a NoSchedule
//     taint since no pod can run there.
//
// Either way it learns where the apiservers are, fails over between them,
// and renews its own client certificate before it expires.
//
// Component declares how the agent itself is run (its systemd unit, process
// spec or static pod come from that one declaration, through package
// component).
//
// It never runs control-plane logic: masters come from package master,
// which installs this agent on them too.
package agent
