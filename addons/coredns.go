package addons

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/node"
)

// Names of the cluster DNS objects, as kubeadm names them, so tools and
// runbooks written for kubeadm clusters find them.
const (
	CoreDNSName    = "coredns"
	DNSServiceName = "kube-dns"
	// DNSLabel is the label CoreDNS's pods and the kube-dns Service carry.
	DNSLabel      = "k8s-app"
	DNSLabelValue = "kube-dns"
	// CoreDNSReplicas spread over two nodes when there are two.
	CoreDNSReplicas = 2
	// controlPlaneTaint is the masters' taint (master.ControlPlaneTaint;
	// this package does not import master).
	controlPlaneTaint = "node-role.kubernetes.io/control-plane"
)

// Corefile is CoreDNS's configuration for clusterDomain: the cluster's
// names from the API, and, when forward is true, everything else forwarded
// to the resolvers of the node CoreDNS runs on. The pod's resolv.conf is
// the node's as the kubelet hands it (dnsPolicy Default), which anvil
// points past a loopback stub resolver, so CoreDNS never forwards to
// itself; the loop plugin stops it should a host still do so. A node with
// no resolver (an offline site) gets no forward block, which CoreDNS would
// refuse to start with: the cluster's names still resolve.
func Corefile(clusterDomain string, forward bool) string {
	fwd := `    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
`
	if !forward {
		fwd = ""
	}
	return fmt.Sprintf(`.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes %s in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
%s    cache 30
    loop
    reload
    loadbalance
}
`, clusterDomain, fwd)
}

// DNSOptions say what of the hosts cluster DNS depends on.
type DNSOptions struct {
	// Forward is true when the nodes have resolvers to forward names
	// outside the cluster to (node.Upstreams of a node's resolv.conf).
	Forward bool
}

// DNSObjects are cluster DNS's objects for c, in apply order: CoreDNS's
// ServiceAccount and RBAC, its Corefile, the Deployment, the kube-dns
// Service at the service CIDR's tenth address (the kubelets' clusterDNS),
// and a PodDisruptionBudget keeping one replica through drains. With no
// host that runs pods there is nothing to run CoreDNS, and none.
func DNSObjects(c *v1alpha1.Cluster, o DNSOptions) ([]runtime.Object, error) {
	nodes, workers := podHosts(c)
	if nodes == 0 {
		return nil, nil
	}
	dns, err := node.ClusterDNS(c.Networking.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	rel, err := images.Lookup(c.KubernetesVersion)
	if err != nil {
		return nil, err
	}
	ns := metav1.NamespaceSystem
	labels := map[string]string{DNSLabel: DNSLabelValue}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}
	}
	sa := &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(CoreDNSName)}
	role := &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns", Labels: labels},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns", Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:coredns"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: CoreDNSName, Namespace: ns}},
	}
	cm := &corev1.ConfigMap{
		TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: meta(CoreDNSName),
		Data: map[string]string{"Corefile": Corefile(c.Networking.ClusterDomain, o.Forward)},
	}
	replicas := int32(CoreDNSReplicas)
	var tolerations []corev1.Toleration
	if workers == 0 {
		// Only masters run pods: CoreDNS must run there.
		tolerations = append(tolerations, corev1.Toleration{Key: controlPlaneTaint, Effect: corev1.TaintEffectNoSchedule})
	}
	no, yes := false, true
	deploy := &appsv1.Deployment{
		TypeMeta: typeMeta("apps/v1", "Deployment"), ObjectMeta: meta(CoreDNSName),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr(intstr.FromInt32(1))},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: CoreDNSName,
					PriorityClassName:  "system-cluster-critical",
					// The node's resolvers, not the cluster DNS itself.
					DNSPolicy:    corev1.DNSDefault,
					NodeSelector: map[string]string{corev1.LabelOSStable: "linux"},
					Tolerations:  tolerations,
					// One replica per node that can run one: the scheduler
					// may not put a second next to the first while another
					// such node runs none (nodes whose taints CoreDNS does
					// not tolerate, such as a NotReady or cordoned one, do
					// not count; a cluster of one node runs both there).
					// Counted per ReplicaSet, so a rollout is not held.
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew:           1,
						TopologyKey:       corev1.LabelHostname,
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
						MatchLabelKeys:    []string{appsv1.DefaultDeploymentUniqueLabelKey},
						NodeTaintsPolicy:  ptr(corev1.NodeInclusionPolicyHonor),
					}},
					// And where it can choose, a node without one.
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100,
							PodAffinityTerm: corev1.PodAffinityTerm{
								LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
								TopologyKey:   corev1.LabelHostname,
							},
						}},
					}},
					Containers: []corev1.Container{{
						Name:  CoreDNSName,
						Image: rel.CoreDNSImage(),
						// Imported from the release on every node; nothing
						// is pulled.
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"-conf", "/etc/coredns/Corefile"},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
						},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("70Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("170Mi")},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns", ReadOnly: true}},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
							InitialDelaySeconds: 60, TimeoutSeconds: 5, FailureThreshold: 5,
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
							PeriodSeconds: 2,
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: &no,
							ReadOnlyRootFilesystem:   &yes,
							Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: CoreDNSName},
					}}}},
				},
			},
		},
	}
	svc := &corev1.Service{
		TypeMeta:   typeMeta("v1", "Service"),
		ObjectMeta: metav1.ObjectMeta{Name: DNSServiceName, Namespace: ns, Labels: map[string]string{DNSLabel: DNSLabelValue, "kubernetes.io/name": "CoreDNS"}},
		Spec: corev1.ServiceSpec{
			Selector:  labels,
			ClusterIP: dns.String(),
			// A pod's queries go to the CoreDNS replica on its own node
			// when there is one, and to any replica otherwise. A node
			// that stops keeps its replica's endpoint in this Service
			// until the Node is found NotReady (the node-monitor grace
			// period, 50 s), and a query sent there is lost, as are a
			// glibc resolver's retries, which leave from the same socket.
			// Kept on the node, queries from a node with a replica never
			// cross to one that stopped, and cost no hop.
			TrafficDistribution: ptr(corev1.ServiceTrafficDistributionPreferSameNode),
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
			},
		},
	}
	pdb := &policyv1.PodDisruptionBudget{
		TypeMeta: typeMeta("policy/v1", "PodDisruptionBudget"), ObjectMeta: meta(CoreDNSName),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr(intstr.FromInt32(1)),
			Selector:     &metav1.LabelSelector{MatchLabels: labels},
		},
	}
	return []runtime.Object{sa, role, binding, cm, deploy, svc, pdb}, nil
}

// WantsDNS reports whether c has cluster DNS: whether a host runs pods.
func WantsDNS(c *v1alpha1.Cluster) bool {
	nodes, _ := podHosts(c)
	return nodes > 0
}

// podHosts counts the hosts of c that run pods, and the workers among them.
func podHosts(c *v1alpha1.Cluster) (nodes, workers int) {
	for _, h := range c.Hosts {
		if h.Runtime != v1alpha1.RuntimeContainerd {
			continue
		}
		nodes++
		if h.Role == v1alpha1.RoleWorker {
			workers++
		}
	}
	return nodes, workers
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func ptr[T any](v T) *T { return &v }

// describe names an object as kubectl does (kind/namespace/name).
func describe(o runtime.Object) string {
	m, err := meta.Accessor(o)
	if err != nil {
		return fmt.Sprintf("%T", o)
	}
	kind := strings.ToLower(o.GetObjectKind().GroupVersionKind().Kind)
	if m.GetNamespace() == "" {
		return kind + "/" + m.GetName()
	}
	return kind + "/" + m.GetNamespace() + "/" + m.GetName()
}
