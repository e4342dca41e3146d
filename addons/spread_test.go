package addons

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func dnsPod(name, node string) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem, Labels: map[string]string{DNSLabel: DNSLabelValue}},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func readyNode(name string, taints ...corev1.Taint) corev1.Node {
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{Taints: taints},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}},
	}
}

func TestToMove(t *testing.T) {
	deploy := func(tolerations ...corev1.Toleration) *appsv1.Deployment {
		r := int32(2)
		d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: &r}}
		d.Spec.Template.Spec.Tolerations = tolerations
		return d
	}
	master := corev1.Taint{Key: controlPlaneTaint, Effect: corev1.TaintEffectNoSchedule}
	notReady := readyNode("w2")
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	cordoned := readyNode("w2")
	cordoned.Spec.Unschedulable = true
	deleting := dnsPod("b", "w1")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	pending := dnsPod("b", "")
	pending.Status.Phase = corev1.PodPending
	tests := []struct {
		name     string
		d        *appsv1.Deployment
		pods     []corev1.Pod
		nodes    []corev1.Node
		pod, to  string
		wantMove bool
	}{
		{"both on w1, w2 free", deploy(), []corev1.Pod{dnsPod("a", "w1"), dnsPod("b", "w1")}, []corev1.Node{readyNode("w1"), readyNode("w2")}, "b", "w2", true},
		{"already spread", deploy(), []corev1.Pod{dnsPod("a", "w1"), dnsPod("b", "w2")}, []corev1.Node{readyNode("w1"), readyNode("w2")}, "", "", false},
		{"one node only", deploy(), []corev1.Pod{dnsPod("a", "w1"), dnsPod("b", "w1")}, []corev1.Node{readyNode("w1")}, "", "", false},
		{"the other is a tainted master", deploy(), []corev1.Pod{dnsPod("a", "w1"), dnsPod("b", "w1")}, []corev1.Node{readyNode("w1"), readyNode("m1", master)}, "", "", false},
		{"masters only, tolerated", deploy(corev1.Toleration{Key: controlPlaneTaint, Effect: corev1.TaintEffectNoSchedule}), []corev1.Pod{dnsPod("a", "m1"), dnsPod("b", "m1")}, []corev1.Node{readyNode("m1", master), readyNode("m2", master)}, "b", "m2", true},
		{"the other is not Ready", deploy(), []corev1.Pod{dnsPod("a", "w1"), dnsPod("b", "w1")}, []corev1.Node{readyNode("w1"), notReady}, "", "", false},
		{"the other is cordoned", deploy(), []corev1.Pod{dnsPod("a", "w1"), dnsPod("b", "w1")}, []corev1.Node{readyNode("w1"), cordoned}, "", "", false},
		{"a replica is being deleted", deploy(), []corev1.Pod{dnsPod("a", "w1"), deleting}, []corev1.Node{readyNode("w1"), readyNode("w2")}, "", "", false},
		{"a replica is pending", deploy(), []corev1.Pod{dnsPod("a", "w1"), pending}, []corev1.Node{readyNode("w1"), readyNode("w2")}, "", "", false},
		{"scaled down to one", deploy(), []corev1.Pod{dnsPod("a", "w1"), dnsPod("b", "w1"), dnsPod("c", "w1")}, []corev1.Node{readyNode("w1"), readyNode("w2")}, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := toMove(tt.d, tt.pods, tt.nodes)
			if ok != tt.wantMove {
				t.Fatalf("toMove = %s from %q to %q, want a move: %v", m.pod.Name, m.from, m.to, tt.wantMove)
			}
			if ok && (m.pod.Name != tt.pod || m.to != tt.to || m.from != m.pod.Spec.NodeName) {
				t.Errorf("toMove = %s from %s to %s, want %s to %s", m.pod.Name, m.from, m.to, tt.pod, tt.to)
			}
		})
	}
}

// TestSpreadEvicts: the replica is evicted (the PodDisruptionBudget has
// its say), not deleted; a dry run only tells.
func TestSpreadEvicts(t *testing.T) {
	r := int32(2)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: CoreDNSName, Namespace: metav1.NamespaceSystem}, Spec: appsv1.DeploymentSpec{Replicas: &r}}
	a, b := dnsPod("coredns-a", "w1"), dnsPod("coredns-b", "w1")
	n1, n2 := readyNode("w1"), readyNode("w2")
	cs := fake.NewClientset([]runtime.Object{d, &a, &b, &n1, &n2}...)
	var evicted []string
	cs.PrependReactor("create", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		evicted = append(evicted, action.(k8stesting.CreateAction).GetObject().(metav1.Object).GetName())
		return true, nil, nil
	})
	ctx := context.Background()
	got, err := Spread(ctx, cs, true)
	if err != nil || len(got) != 1 || !strings.HasPrefix(got[0], "pod/kube-system/coredns-b moved off w1") || len(evicted) != 0 {
		t.Fatalf("dry run: %q, %v, evicted %v", got, err, evicted)
	}
	got, err = Spread(ctx, cs, false)
	if err != nil || len(got) != 1 || !slices.Equal(evicted, []string{"coredns-b"}) {
		t.Fatalf("Spread: %q, %v, evicted %v", got, err, evicted)
	}
	for _, a := range cs.Actions() {
		if a.GetVerb() == "delete" {
			t.Errorf("a pod was deleted, not evicted: %v", a)
		}
	}
}
