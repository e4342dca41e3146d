package installer

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/master"
)

// TestNodeStatesTellStartingTaints: a Ready Node that still carries a
// taint of a node coming up (here anvil's no-runtime) is not yet one the
// ready phase is done with; a master's taint and a user's are not
// counted.
func TestNodeStatesTellStartingTaints(t *testing.T) {
	ready := corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}
	node := func(name string, taints ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: ready}
		for _, k := range taints {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: k, Effect: corev1.TaintEffectNoSchedule})
		}
		return n
	}
	a := &clusterAccess{client: fake.NewClientset(
		node("w1", agent.NoRuntimeTaintKey),
		node("m1", master.ControlPlaneTaint),
		node("w2", "dedicated"),
		node("w3", corev1.TaintNodeNotReady),
	)}
	got, err := a.nodeStates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"w1": agent.NoRuntimeTaintKey, "m1": "", "w2": "", "w3": corev1.TaintNodeNotReady}
	for n, w := range want {
		if !got[n].Ready || got[n].Starting != w {
			t.Errorf("%s: %+v, want Ready and starting %q", n, got[n], w)
		}
	}
}
