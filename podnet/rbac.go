package podnet

import (
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeReaderRole names the ClusterRole (and its binding) that lets nodes
// read every Node.
const NodeReaderRole = "anvil:podnet-node-reader"

// NodesGroup is the group every node's identity is in.
const NodesGroup = "system:nodes"

// RBAC is what the pod network needs beyond what the Node authorizer gives
// a node: since Kubernetes 1.34 a node (system:node:NAME) may read only its
// own Node, and the controller routes to the pod range of every other one.
// The role grants reading Nodes and nothing else; it is bound to the
// group every node's identity is in, since the agent's certificate can
// carry no other group (the kube-apiserver-client-kubelet signer
// requires exactly system:nodes).
func RBAC() (*rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding) {
	meta := metav1.ObjectMeta{Name: NodeReaderRole}
	role := &rbacv1.ClusterRole{
		ObjectMeta: meta,
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"},
		}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: NodeReaderRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: NodesGroup}},
	}
	return role, binding
}
