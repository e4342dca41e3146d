package node

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
)

// The cluster's node settings are published where a joining machine can
// read them with its bootstrap token, as kubeadm publishes kubelet-config:
// ConfigMap kube-system/anvil-node-config, key config.yaml. Init writes it
// from the cluster file; every join reads it, so a worker needs no flag
// for the pod and service networks and cannot disagree with the masters.
const (
	ClusterConfigNamespace = "kube-system"
	ClusterConfigMap       = "anvil-node-config"
	ClusterConfigKey       = "config.yaml"
	// clusterConfigReader is the Role (and RoleBinding) that lets
	// bootstrap tokens and nodes get that ConfigMap, and nothing else.
	clusterConfigReader = "anvil:node-config-reader"
	// Groups every bootstrap token and every node is in.
	bootstrappersGroup = "system:bootstrappers"
	nodesGroup         = "system:nodes"
)

// ClusterConfig is what every node of a cluster shares: the Kubernetes
// version its binaries are, and the networks.
type ClusterConfig struct {
	KubernetesVersion string              `yaml:"kubernetesVersion"`
	ServiceCIDR       netip.Prefix        `yaml:"serviceCIDR"`
	PodCIDR           netip.Prefix        `yaml:"podCIDR"`
	ClusterDomain     string              `yaml:"clusterDomain"`
	Network           v1alpha1.PodNetwork `yaml:"network"`
}

// ClusterConfigOf takes a defaulted cluster file's node settings.
func ClusterConfigOf(c *v1alpha1.Cluster) ClusterConfig {
	return ClusterConfig{
		KubernetesVersion: c.KubernetesVersion,
		ServiceCIDR:       c.Networking.ServiceCIDR,
		PodCIDR:           c.Networking.PodCIDR,
		ClusterDomain:     c.Networking.ClusterDomain,
		Network:           c.Networking.Network,
	}
}

// Cluster is a cluster holding only these settings, what a Plan needs of
// a cluster on a machine that has no cluster file (a joined worker).
func (cc ClusterConfig) Cluster() *v1alpha1.Cluster {
	c := &v1alpha1.Cluster{KubernetesVersion: cc.KubernetesVersion}
	c.Networking = v1alpha1.Networking{ServiceCIDR: cc.ServiceCIDR, PodCIDR: cc.PodCIDR, ClusterDomain: cc.ClusterDomain, Network: cc.Network}
	return c
}

// Validate checks what a node cannot run without.
func (cc ClusterConfig) Validate() error {
	var errs []error
	if _, err := images.Lookup(cc.KubernetesVersion); err != nil {
		errs = append(errs, fmt.Errorf("kubernetesVersion: %w", err))
	}
	if _, err := ClusterDNS(cc.ServiceCIDR); err != nil {
		errs = append(errs, fmt.Errorf("serviceCIDR: %w", err))
	}
	if !cc.PodCIDR.IsValid() {
		errs = append(errs, errors.New("podCIDR: missing"))
	} else if cc.PodCIDR.Overlaps(cc.ServiceCIDR) {
		errs = append(errs, fmt.Errorf("podCIDR %s overlaps serviceCIDR %s", cc.PodCIDR, cc.ServiceCIDR))
	}
	if cc.ClusterDomain == "" {
		errs = append(errs, errors.New("clusterDomain: missing"))
	}
	switch cc.Network {
	case v1alpha1.PodNetworkHostGW, v1alpha1.PodNetworkNone:
	default:
		errs = append(errs, fmt.Errorf("network: %q is neither %s nor %s", cc.Network, v1alpha1.PodNetworkHostGW, v1alpha1.PodNetworkNone))
	}
	return errors.Join(errs...)
}

// ConfigMap is the ConfigMap init publishes.
func (cc ClusterConfig) ConfigMap() (*corev1.ConfigMap, error) {
	if err := cc.Validate(); err != nil {
		return nil, fmt.Errorf("node settings: %w", err)
	}
	b, err := yaml.Marshal(cc)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ClusterConfigMap, Namespace: ClusterConfigNamespace},
		Data:       map[string]string{ClusterConfigKey: string(b)},
	}, nil
}

// ParseClusterConfigMap reads and checks the ConfigMap init published.
func ParseClusterConfigMap(cm *corev1.ConfigMap) (ClusterConfig, error) {
	var cc ClusterConfig
	where := ClusterConfigNamespace + "/" + ClusterConfigMap
	s, ok := cm.Data[ClusterConfigKey]
	if !ok {
		return cc, fmt.Errorf("ConfigMap %s has no %s", where, ClusterConfigKey)
	}
	dec := yaml.NewDecoder(strings.NewReader(s))
	dec.KnownFields(true)
	if err := dec.Decode(&cc); err != nil {
		return cc, fmt.Errorf("ConfigMap %s: %s: %w", where, ClusterConfigKey, err)
	}
	if err := cc.Validate(); err != nil {
		return cc, fmt.Errorf("ConfigMap %s: %w", where, err)
	}
	return cc, nil
}

// ClusterConfigRBAC lets every bootstrap token and every node get the
// ConfigMap, by name, and nothing else.
func ClusterConfigRBAC() (*rbacv1.Role, *rbacv1.RoleBinding) {
	meta := metav1.ObjectMeta{Name: clusterConfigReader, Namespace: ClusterConfigNamespace}
	role := &rbacv1.Role{
		ObjectMeta: meta,
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"configmaps"},
			ResourceNames: []string{ClusterConfigMap}, Verbs: []string{"get"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: clusterConfigReader},
		Subjects: []rbacv1.Subject{
			{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: bootstrappersGroup},
			{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: nodesGroup},
		},
	}
	return role, binding
}
