package approver

import (
	certificatesv1 "k8s.io/api/certificates/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The approver's identity and its leader lease.
const (
	// User is the user name the approver authenticates as (the CN of its
	// client certificate, with no organization).
	User = "system:anvil-approver"
	// RBACName names its ClusterRole, ClusterRoleBinding, Role and
	// RoleBinding.
	RBACName = "anvil:approver"
	// LeaseNamespace and LeaseName are the Lease its instances elect a
	// leader on.
	LeaseNamespace = metav1.NamespaceSystem
	LeaseName      = "anvil-approver"
)

// RBACObjects are what User needs, cluster-wide and in LeaseNamespace.
type RBACObjects struct {
	// ClusterRole: read and watch CSRs, write their approval, approve for
	// the two kubelet signers only, read and watch Nodes.
	ClusterRole        *rbacv1.ClusterRole
	ClusterRoleBinding *rbacv1.ClusterRoleBinding
	// Role: its one Lease, in LeaseNamespace rather than cluster-wide.
	Role        *rbacv1.Role
	RoleBinding *rbacv1.RoleBinding
}

// RBAC returns the objects that let User run the approver, labelled as
// anvil's. Approving or denying needs both the update of the approval
// subresource and the verb "approve" on the signer (the CertificateApproval
// admission plugin checks it), here granted for the kubelet's two signers
// and no other.
func RBAC() RBACObjects {
	labels := func() map[string]string { return map[string]string{"app.kubernetes.io/managed-by": "anvil"} }
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: User}}
	return RBACObjects{
		ClusterRole: &rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: RBACName, Labels: labels()},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{certificatesv1.GroupName}, Resources: []string{"certificatesigningrequests"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{certificatesv1.GroupName}, Resources: []string{"certificatesigningrequests/approval"}, Verbs: []string{"update"}},
				{
					APIGroups: []string{certificatesv1.GroupName}, Resources: []string{"signers"}, Verbs: []string{"approve"},
					ResourceNames: []string{certificatesv1.KubeletServingSignerName, certificatesv1.KubeAPIServerClientKubeletSignerName},
				},
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
			},
		},
		ClusterRoleBinding: &rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: RBACName, Labels: labels()},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: RBACName},
			Subjects:   subject,
		},
		Role: &rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "Role"},
			ObjectMeta: metav1.ObjectMeta{Name: RBACName, Namespace: LeaseNamespace, Labels: labels()},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{LeaseName}, Verbs: []string{"get", "update"}},
				// create cannot be limited by name: RBAC sees no name yet.
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
			},
		},
		RoleBinding: &rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: RBACName, Namespace: LeaseNamespace, Labels: labels()},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: RBACName},
			Subjects:   subject,
		},
	}
}
