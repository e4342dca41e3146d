package master

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/node"
)

// ensureNodeConfig publishes the cluster's node settings
// (kube-system/anvil-node-config) and the Role and RoleBinding that let
// bootstrap tokens and nodes get that one ConfigMap: every join reads it
// with its token, so a node's pod and service networks come from the
// cluster, not from flags.
func ensureNodeConfig(ctx context.Context, cs kubernetes.Interface, cc node.ClusterConfig) error {
	cm, err := cc.ConfigMap()
	if err != nil {
		return err
	}
	role, binding := node.ClusterConfigRBAC()
	for _, m := range []*metav1.ObjectMeta{&cm.ObjectMeta, &role.ObjectMeta, &binding.ObjectMeta} {
		m.Labels = ownedLabels()
	}
	cms := cs.CoreV1().ConfigMaps(cm.Namespace)
	if err := createOrUpdate(
		func() error { _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); return err },
		func() error {
			cur, err := cms.Get(ctx, cm.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Data, cur.Labels = cm.Data, cm.Labels
			_, err = cms.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		}); err != nil {
		return err
	}
	if err := applyRole(ctx, cs, role); err != nil {
		return err
	}
	return applyRoleBinding(ctx, cs, binding)
}
