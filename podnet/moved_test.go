package podnet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func apiPod(name, node, ip string, hostNetwork bool) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node, HostNetwork: hostNetwork},
		Status:     corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func TestStaleAddrs(t *testing.T) {
	own := prefixes("10.244.4.0/24", "fd00:10:244:4::/64")
	cluster := prefixes("10.244.0.0/16", "fd00:10:244::/56")
	addrs := prefixes("10.244.1.1/24", "10.244.4.1/24", "192.168.1.5/24", "fd00:10:244:1::1/64", "fd00:10:244:4::1/64", "fe80::1/64")
	got := staleAddrs(addrs, own, cluster)
	want := prefixes("10.244.1.1/24", "fd00:10:244:1::1/64")
	if !slices.Equal(got, want) {
		t.Errorf("staleAddrs = %v, want %v: only a former pod range's, never the node's range, an address outside the cluster's pods or a link-local one", got, want)
	}
}

func TestStrandedPods(t *testing.T) {
	own := prefixes("10.244.4.0/24")
	cluster := prefixes("10.244.0.0/16")
	deleting := apiPod("deleting", "a", "10.244.1.9", false)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	noIPs := apiPod("only-podip", "a", "10.244.1.8", false)
	noIPs.Status.PodIPs = nil
	pods := []corev1.Pod{
		*apiPod("old", "a", "10.244.1.5", false),
		*apiPod("new", "a", "10.244.4.3", false),
		*apiPod("host", "a", "192.168.1.5", true),
		*apiPod("pending", "a", "", false),
		*deleting,
		*noIPs,
	}
	var got []string
	for _, p := range strandedPods(pods, own, cluster) {
		got = append(got, p.Name)
	}
	if want := []string{"old", "only-podip"}; !slices.Equal(got, want) {
		t.Errorf("strandedPods = %v, want %v", got, want)
	}
}

// TestFormerPodRangeIsCleared: a node whose Node was deleted and
// registered again with another pod range. The bridge's address of the old
// range, which makes the CNI bridge plugin refuse every new pod, is
// removed, and the node's pods left with addresses of the old range are
// deleted; its other pods, another node's and a host-network one stay.
func TestFormerPodRangeIsCleared(t *testing.T) {
	l := newLab(t)
	a := l.machine(t)
	l.create(t, node("a", cidrs("10.244.4.0/24"), a.Addr.String()))
	a.ip(t, "link", "add", BridgeName, "type", "bridge")
	a.ip(t, "addr", "add", "10.244.1.1/24", "dev", BridgeName)
	a.ip(t, "link", "set", BridgeName, "up")
	ctx := context.Background()
	for _, p := range []*corev1.Pod{
		apiPod("old", "a", "10.244.1.5", false),
		apiPod("new", "a", "10.244.4.3", false),
		apiPod("host", "a", a.Addr.String(), true),
		apiPod("elsewhere", "b", "10.244.1.7", false),
	} {
		if _, err := l.cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	l.start(t, a, "a", nil)
	eventually(t, 10*time.Second, func() error {
		if out := a.ip(t, "-o", "-4", "addr", "show", "dev", BridgeName); strings.Contains(out, "10.244.1.1/24") {
			return fmt.Errorf("bridge %s still has the former range's address: %s", BridgeName, out)
		}
		if _, err := l.cs.CoreV1().Pods("default").Get(ctx, "old", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod old (10.244.1.5, outside 10.244.4.0/24) not deleted: %v", err)
		}
		return nil
	})
	for _, name := range []string{"new", "host", "elsewhere"} {
		if _, err := l.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("pod %s: %v", name, err)
		}
	}
	if !strings.Contains(a.logs.String(), "former pod range") {
		t.Errorf("the log does not say why:\n%s", a.logs.String())
	}
}
