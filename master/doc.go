// Package master makes a machine a control-plane node.
//
// What it owns:
//   - the plan of a master (plan.go): the cluster file, this host, the
//     runtime root, the Kubernetes version and the etcd membership, from
//     which everything else is computed;
//   - the component declarations (components.go): etcd (`anvil etcd`),
//     kube-apiserver, kube-controller-manager, kube-scheduler and the VIP
//     manager, each one component.Spec with its ordered flags and the reason
//     for every secure default beside it; the ports, unit names and programs
//     other packages check are read off these declarations (owned.go);
//   - the documents they read (configfiles.go): etcd's config in etcd's own
//     keys, encryption at rest, audit, authentication, the scheduler's config;
//   - the flows of a master, each a literal list of phases run by
//     internal/phase: init (init.go), control-plane join (joincp.go), reset
//     (reset.go, with the node stack's part in reset_node.go: pods, kubelet
//     and containerd, mounts, pod network, files; used on workers too); and
//     ControlPlane (controlplane.go), the one way those
//     flows and restore start, stop and wait for components;
//   - a master's own node (nodephases.go): with hosts[].runtime containerd
//     the node phase installs package node's stack (containerd and a
//     kubelet with its own credentials from the CA, registering the Node
//     with the control-plane taint) and the agent runs the pod network;
//     with runtime none the agent registers the Node itself; either way
//     mark-control-plane waits for the Node and labels it;
//   - the cluster's bootstrap objects (bootstrap.go): RBAC, bootstrap tokens
//     (token.go: each expires within MaxTokenTTL, and may be bound to the
//     join of one node, whose client certificate anvil's approver alone
//     approves), cluster-info, the anvil ConfigMap, the node settings joining nodes
//     read (bootstrap_node.go); the sealed shared certificates for
//     joining masters (uploadcerts.go); the VIP manager (vip.go); the backup
//     timer's declaration (backup_schedule.go); status (status.go).
//
// It never talks SSH (package installer does), never takes or restores
// backups (package backup, which uses this one), and leaves etcd membership
// to package etcd.
package master
