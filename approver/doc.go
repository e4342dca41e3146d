// Package approver is anvil's CSR approver: a controller, run on masters as
// its own leader-elected component (Lease kube-system/anvil-approver), that
// approves or denies the certificate signing requests of nodes. It only
// decides; the controller-manager's csrsigning controller still signs what
// is approved.
//
// Decide (policy.go) holds the whole policy as a pure function of a CSR and
// a few facts of the cluster; Run (run.go) feeds it from informers and
// writes its verdicts as the CSR's Approved or Denied condition, with the
// reason as the condition's message. It decides two signers:
//
//   - kubernetes.io/kubelet-serving: a kubelet's serving certificate, which
//     the controller-manager never approves. Approved only for the node
//     itself (system:node:NAME in system:nodes), with the node's own subject,
//     the serving usages, a sane key, and SANs that are all addresses the
//     Node object reports. A CSR whose Node does not exist yet stays pending
//     and is looked at again when the Node appears.
//   - kubernetes.io/kube-apiserver-client-kubelet: a node's client
//     certificate. Approved for a node renewing its own, and for a bootstrap
//     token bound to one node (extra group NodeBootstrapGroupPrefix+NAME, see
//     NodeBootstrapGroup) asking for that node's identity while no Node of
//     that name exists: a join token must not mint an existing node's
//     identity.
//
// # Interplay with the controller-manager
//
// anvil, as kubeadm, binds the ClusterRole
// system:certificates.k8s.io:certificatesigningrequests:nodeclient to the
// group system:bootstrappers:kubeadm:default-node-token (ClusterRoleBinding
// kubeadm:node-autoapprove-bootstrap), so the controller-manager's
// csrapproving controller approves any client CSR a token in that group
// (one bound to no node: `anvil token create` without --node, the token
// `anvil init` prints) makes, for any node name. The approver leaves those
// CSRs alone unless Options.OwnBootstrapApproval is set: then it denies
// every bootstrap CSR whose token carries no node binding, and the binding
// kubeadm:node-autoapprove-bootstrap must be gone, or the controller-manager
// approves them first.
//
// A token bound to a node (`anvil token create --node`, and every join
// token `anvil cluster apply` makes) is never also in the default group,
// for the same reason (package master refuses to make one), so the
// controller-manager leaves its CSRs to the approver alone; it creates
// them through its own grant (system:node-bootstrapper bound to the group
// system:bootstrappers, which every bootstrap token has, as RBAC cannot
// bind a group prefix: ClusterRoleBinding kubeadm:kubelet-bootstrap).
//
// Whoever writes first wins: an
// approval is an update guarded by the CSR's resourceVersion, and the API
// refuses a CSR both approved and denied, so a CSR is never decided twice.
//
// Renewals by nodes themselves are also approved by the controller-manager
// (kubeadm:node-autoapprove-certificate-rotation); both agree on them, so
// either may write first. A node asking for another node's CN never gets
// here: the apiserver's NodeRestriction admission refuses the CSR (Decide
// would deny it too).
package approver
