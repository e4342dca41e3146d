package master

import (
	"context"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/podnet"
)

// ensureApproverRBAC lets anvil's CSR approver do its job and nothing more
// (approver.RBAC): approve kubelet certificates, read Nodes, hold its Lease.
func ensureApproverRBAC(ctx context.Context, cs kubernetes.Interface) error {
	o := approver.RBAC()
	if err := applyClusterRole(ctx, cs, o.ClusterRole); err != nil {
		return err
	}
	if err := applyClusterRoleBinding(ctx, cs, o.ClusterRoleBinding); err != nil {
		return err
	}
	if err := applyRole(ctx, cs, o.Role); err != nil {
		return err
	}
	return applyRoleBinding(ctx, cs, o.RoleBinding)
}

// createOrUpdate creates an object, or updates it when it exists already.
func createOrUpdate(create, update func() error) error {
	err := create()
	if apierrors.IsAlreadyExists(err) {
		return update()
	}
	return err
}

// applyClusterRole creates role, or gives the one there its rules and
// labels.
func applyClusterRole(ctx context.Context, cs kubernetes.Interface, role *rbacv1.ClusterRole) error {
	roles := cs.RbacV1().ClusterRoles()
	return createOrUpdate(
		func() error {
			_, err := roles.Create(ctx, role, metav1.CreateOptions{})
			return err
		},
		func() error {
			cur, err := roles.Get(ctx, role.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Rules, cur.Labels = role.Rules, role.Labels
			_, err = roles.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
}

// applyRole creates role, or gives the one there its rules and labels.
func applyRole(ctx context.Context, cs kubernetes.Interface, role *rbacv1.Role) error {
	roles := cs.RbacV1().Roles(role.Namespace)
	return createOrUpdate(
		func() error { _, err := roles.Create(ctx, role, metav1.CreateOptions{}); return err },
		func() error {
			cur, err := roles.Get(ctx, role.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Rules, cur.Labels = role.Rules, role.Labels
			_, err = roles.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
}

// applyRoleBinding creates binding, or gives the one there its subjects
// and labels; one bound to another role is made again, as a binding's
// role reference is immutable.
func applyRoleBinding(ctx context.Context, cs kubernetes.Interface, binding *rbacv1.RoleBinding) error {
	bindings := cs.RbacV1().RoleBindings(binding.Namespace)
	return createOrUpdate(
		func() error { _, err := bindings.Create(ctx, binding, metav1.CreateOptions{}); return err },
		func() error {
			cur, err := bindings.Get(ctx, binding.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cur.RoleRef != binding.RoleRef {
				if err := bindings.Delete(ctx, cur.Name, metav1.DeleteOptions{}); err != nil {
					return err
				}
				_, err = bindings.Create(ctx, binding, metav1.CreateOptions{})
				return err
			}
			cur.Subjects, cur.Labels = binding.Subjects, binding.Labels
			_, err = bindings.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
}

// ensurePodNetworkRBAC lets every node's agent read the Nodes its pod
// network routes to (podnet.RBAC).
func ensurePodNetworkRBAC(ctx context.Context, cs kubernetes.Interface) error {
	role, binding := podnet.RBAC()
	if err := applyClusterRole(ctx, cs, role); err != nil {
		return err
	}
	return applyClusterRoleBinding(ctx, cs, binding)
}

// NodeProxierBinding binds the built-in system:node-proxier ClusterRole
// (Services, EndpointSlices, Nodes, events: what kube-proxy reads and
// writes) to every node: each node's kube-proxy runs as the node, with the
// kubelet's rotating client certificate, as the Node authorizer alone
// would not let it list EndpointSlices.
const NodeProxierBinding = "anvil:node-proxier"

// ensureNodeProxierRBAC binds system:node-proxier to the nodes' group.
func ensureNodeProxierRBAC(ctx context.Context, cs kubernetes.Interface) error {
	return applyClusterRoleBinding(ctx, cs, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: NodeProxierBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-proxier"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: podnet.NodesGroup}},
	})
}
