package addons

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
// leaving every other field, a user's own, as it is, and returns the
// objects that changed (kind/namespace/name). Applying the same objects
// again changes nothing. With dryRun the API server decides what would
// change and nothing is written: what `anvil status` reports as drift.
func Apply(ctx context.Context, cs kubernetes.Interface, objs []runtime.Object, dryRun bool) ([]string, error) {
	force := true
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var changed []string
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			return changed, err
		}
		data, err := json.Marshal(o)
		if err != nil {
			return changed, fmt.Errorf("apply %s: %w", describe(o), err)
		}
		name, ns := m.GetName(), m.GetNamespace()
		var c bool
		switch o.(type) {
		case *corev1.ServiceAccount:
			c, err = applyOne(ctx, cs.CoreV1().ServiceAccounts(ns), name, data, opts)
		case *corev1.ConfigMap:
			c, err = applyOne(ctx, cs.CoreV1().ConfigMaps(ns), name, data, opts)
		case *corev1.Service:
			c, err = applyOne(ctx, cs.CoreV1().Services(ns), name, data, opts)
		case *rbacv1.ClusterRole:
			c, err = applyOne(ctx, cs.RbacV1().ClusterRoles(), name, data, opts)
		case *rbacv1.ClusterRoleBinding:
			c, err = applyOne(ctx, cs.RbacV1().ClusterRoleBindings(), name, data, opts)
		case *appsv1.Deployment:
			c, err = applyOne(ctx, cs.AppsV1().Deployments(ns), name, data, opts)
		case *policyv1.PodDisruptionBudget:
			c, err = applyOne(ctx, cs.PolicyV1().PodDisruptionBudgets(ns), name, data, opts)
		default:
			return changed, fmt.Errorf("apply %s: anvil applies no %T", describe(o), o)
		}
		if err != nil {
			return changed, fmt.Errorf("apply %s: %w", describe(o), err)
		}
		if c {
			changed = append(changed, describe(o))
		}
	}
	return changed, nil
}

// typedClient is what every typed client of client-go has for its kind.
type typedClient[T metav1.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
}

// applyOne applies one object and says whether it changed. The object the
// API server returns is compared with the one it held, leaving out what
// moves without anyone's edit (resourceVersion, generation, managedFields,
// status): a dry run writes nothing and so bumps no resourceVersion, yet
// must still tell an edited field from an untouched one.
func applyOne[T metav1.Object](ctx context.Context, c typedClient[T], name string, data []byte, opts metav1.PatchOptions) (bool, error) {
	var before map[string]any
	cur, err := c.Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		if before, err = comparable(cur); err != nil {
			return false, err
		}
	case !apierrors.IsNotFound(err):
		return false, err
	}
	out, err := c.Patch(ctx, name, types.ApplyPatchType, data, opts)
	if err != nil {
		return false, err
	}
	if before == nil {
		return true, nil
	}
	after, err := comparable(out)
	if err != nil {
		return false, err
	}
	return !equality.Semantic.DeepEqual(before, after), nil
}

// comparable is o without the fields that change on their own.
func comparable(o any) (map[string]any, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, err
	}
	delete(u, "status")
	if md, ok := u["metadata"].(map[string]any); ok {
		for _, k := range []string{"resourceVersion", "generation", "managedFields"} {
			delete(md, k)
		}
	}
	return u, nil
}
