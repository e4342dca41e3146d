package podnet

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/internal/benchreport"
)

// BenchmarkRoutesAt1000Nodes: one node's controller in a namespace, a
// cluster of 1000 other Nodes (each with a /26 of 10.244.0.0/16 and an
// address on a second subnet of the node's interface; nobody answers
// there, no packet is sent). Figures: programming all 1000 routes from a
// cold start, then one Node added and one deleted among them.
func BenchmarkRoutesAt1000Nodes(b *testing.B) {
	const n = 1000
	l := newLab(b)
	a := l.machine(b)
	a.ip(b, "addr", "add", "10.198.0.1/20", "dev", "eth0")
	ctx := context.Background()
	l.create(b, node("self", cidrs("10.244.255.192/26"), "10.198.0.1"))
	for i := range n {
		l.create(b, benchNode(i))
	}
	for b.Loop() {
		want := n
		t0 := time.Now()
		ctl := l.start(b, a, "self", nil)
		waitCount(b, ctl, want)
		cold := time.Since(t0)

		t1 := time.Now()
		l.create(b, benchNode(n))
		waitCount(b, ctl, want+1)
		add := time.Since(t1)

		t2 := time.Now()
		if err := l.cs.CoreV1().Nodes().Delete(ctx, benchNode(n).Name, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		waitCount(b, ctl, want)
		del := time.Since(t2)

		for _, f := range []benchreport.Figure{
			{Name: fmt.Sprintf("podnet cold start to %d routes", n), Value: cold.Seconds(), Unit: "s", Anchor: 5, Note: "target; informer list included"},
			{Name: fmt.Sprintf("podnet Node added to route (%d routes)", n), Value: ms(add), Unit: "ms", Anchor: 1000, Note: "target: a new Node's pods reachable within 1 s"},
			{Name: fmt.Sprintf("podnet Node deleted to route gone (%d routes)", n), Value: ms(del), Unit: "ms", Anchor: 1000, Note: "target"},
		} {
			benchreport.Report(b, f)
		}
		a.stop()
	}
}

func benchNode(i int) *corev1.Node {
	cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i / 4), byte(i % 4 * 64)}), 26)
	ip := netip.AddrFrom4([4]byte{10, 198, byte((i + 2) / 256), byte((i + 2) % 256)})
	return node(fmt.Sprintf("n%04d", i), cidrs(cidr.String()), ip.String())
}

func waitCount(b testing.TB, ctl *Controller, want int) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(ctl.Status().Routes) != want {
		if time.Now().After(deadline) {
			st := ctl.Status()
			b.Fatalf("%d routes, want %d; err %v; waiting %v", len(st.Routes), want, st.Err, st.Waiting)
		}
		time.Sleep(time.Millisecond)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
