package addons

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// FieldManager owns, in every object anvil applies, the fields anvil sets.
const FieldManager = "anvil"

// Apply server-side applies objs, in order, as FieldManager, forcing
// ownership of the fields anvil sets (they are anvil's to decide) and
// leaving every other field, a user's own, as it is. Applying the same
// objects again changes nothing.
func Apply(ctx context.Context, cs kubernetes.Interface, objs []runtime.Object) error {
	force := true
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force}
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			return err
		}
		data, err := json.Marshal(o)
		if err != nil {
			return fmt.Errorf("apply %s: %w", describe(o), err)
		}
		name, ns := m.GetName(), m.GetNamespace()
		switch o.(type) {
		case *corev1.ServiceAccount:
			_, err = cs.CoreV1().ServiceAccounts(ns).Patch(ctx, name, types.ApplyPatchType, data, opts)
		case *corev1.ConfigMap:
			_, err = cs.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.ApplyPatchType, data, opts)
		case *corev1.Service:
			_, err = cs.CoreV1().Services(ns).Patch(ctx, name, types.ApplyPatchType, data, opts)
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Patch(ctx, name, types.ApplyPatchType, data, opts)
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Patch(ctx, name, types.ApplyPatchType, data, opts)
		case *appsv1.Deployment:
			_, err = cs.AppsV1().Deployments(ns).Patch(ctx, name, types.ApplyPatchType, data, opts)
		case *policyv1.PodDisruptionBudget:
			_, err = cs.PolicyV1().PodDisruptionBudgets(ns).Patch(ctx, name, types.ApplyPatchType, data, opts)
		default:
			return fmt.Errorf("apply %s: anvil applies no %T", describe(o), o)
		}
		if err != nil {
			return fmt.Errorf("apply %s: %w", describe(o), err)
		}
	}
	return nil
}
