package addons

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// Spread moves one CoreDNS replica off a node that runs two when a node
// that could run one runs none. Init creates CoreDNS before any worker
// has joined, and the first worker Ready takes both replicas (the
// anti-affinity is a preference, so that a cluster of one node runs both):
// stopping that worker would take cluster DNS with it. The pod is evicted,
// so the PodDisruptionBudget is honoured; its replacement is scheduled
// away from the other replica. One pod per call: the next apply sees the
// result. It returns the pod it moved (or, with dryRun, would move), as
// "pod/NAMESPACE/NAME moved off NODE (…)".
func Spread(ctx context.Context, cs kubernetes.Interface, dryRun bool) ([]string, error) {
	ns := metav1.NamespaceSystem
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, CoreDNSName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spread CoreDNS: %w", err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: DNSLabel + "=" + DNSLabelValue})
	if err != nil {
		return nil, fmt.Errorf("spread CoreDNS: list its pods: %w", err)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("spread CoreDNS: list Nodes: %w", err)
	}
	m, ok := toMove(d, pods.Items, nodes.Items)
	if !ok {
		return nil, nil
	}
	p := m.pod
	what := fmt.Sprintf("pod/%s/%s moved off %s (%d CoreDNS replicas there, none on %s)", p.Namespace, p.Name, m.from, m.there, m.to)
	if dryRun {
		return []string{what}, nil
	}
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}}
	switch err := cs.PolicyV1().Evictions(p.Namespace).Evict(ctx, ev); {
	case err == nil:
		return []string{what}, nil
	case apierrors.IsNotFound(err):
		return nil, nil
	case apierrors.IsTooManyRequests(err):
		// The budget allows no disruption now (a replica is starting):
		// the next apply moves it.
		return nil, nil
	default:
		return nil, fmt.Errorf("spread CoreDNS: evict %s: %w", what, err)
	}
}

// move is a CoreDNS pod to move: off node from, where there replicas
// run, while node to, which could run one, runs none.
type move struct {
	pod      corev1.Pod
	from, to string
	there    int
}

// toMove picks the pod of d to move: the last by name of the node that
// runs the most replicas. Nothing while every replica runs on its own
// node, while a replica is not running or being deleted (the Deployment is
// settling), or when no other node could take one.
func toMove(d *appsv1.Deployment, pods []corev1.Pod, nodes []corev1.Node) (move, bool) {
	if d.Spec.Replicas == nil || len(pods) != int(*d.Spec.Replicas) || len(pods) < 2 {
		return move{}, false
	}
	on := map[string]int{}
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning {
			return move{}, false
		}
		on[p.Spec.NodeName]++
	}
	var free []string
	for _, n := range nodes {
		if on[n.Name] == 0 && canRun(n, d.Spec.Template.Spec.Tolerations) {
			free = append(free, n.Name)
		}
	}
	if len(free) == 0 {
		return move{}, false
	}
	p := slices.MinFunc(pods, func(a, b corev1.Pod) int {
		if c := on[b.Spec.NodeName] - on[a.Spec.NodeName]; c != 0 {
			return c
		}
		if c := cmp.Compare(a.Spec.NodeName, b.Spec.NodeName); c != 0 {
			return c
		}
		return cmp.Compare(b.Name, a.Name)
	})
	if on[p.Spec.NodeName] < 2 {
		return move{}, false
	}
	return move{pod: p, from: p.Spec.NodeName, to: slices.Min(free), there: on[p.Spec.NodeName]}, true
}

// canRun reports whether the scheduler could put a CoreDNS pod (with
// tolerations) on n now: Ready, schedulable, and no taint that keeps new
// pods off it untolerated.
func canRun(n corev1.Node, tolerations []corev1.Toleration) bool {
	if n.Spec.Unschedulable {
		return false
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		if !slices.ContainsFunc(tolerations, func(tol corev1.Toleration) bool { return tol.ToleratesTaint(klog.Background(), &t, false) }) {
			return false
		}
	}
	return true
}
