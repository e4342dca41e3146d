package podnet

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// node is a Node with pod CIDRs and InternalIPs.
func node(name string, podCIDRs []string, ips ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: podCIDRs}}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR = podCIDRs[0]
	}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	return n
}

func cidrs(s ...string) []string { return s }

func TestMakePlan(t *testing.T) {
	self := node("a", cidrs("10.244.1.0/24", "fd00:10:244:1::/64"), "192.168.1.1", "fd00::1")
	base := planInput{
		self:    "a",
		cluster: prefixes("10.244.0.0/16", "fd00:10:244::/56"),
		iface:   "eth0",
		ifAddrs: prefixes("192.168.1.1/24", "fd00::1/64"),
	}
	type want struct {
		own        string // joined
		ownWaiting string // substring
		routes     []string
		waiting    []string // "node: substring"
	}
	for _, tc := range []struct {
		name  string
		nodes []*corev1.Node
		want  want
	}{
		{"alone", []*corev1.Node{self}, want{own: "10.244.1.0/24 fd00:10:244:1::/64"}},
		{"not registered", []*corev1.Node{node("b", cidrs("10.244.2.0/24"), "192.168.1.2")},
			want{ownWaiting: "node a is not registered yet", routes: []string{"10.244.2.0/24 via 192.168.1.2 (node b)"}}},
		{"own Node without pod CIDR", []*corev1.Node{node("a", nil, "192.168.1.1")},
			want{ownWaiting: "node a has no pod CIDR yet: is the controller-manager running with --allocate-node-cidrs?"}},
		{"own pod CIDR outside the cluster's", []*corev1.Node{node("a", cidrs("10.99.0.0/24"), "192.168.1.1")},
			want{ownWaiting: "outside the cluster's pod CIDR"}},
		{"dual-stack peer", []*corev1.Node{self, node("b", cidrs("10.244.2.0/24", "fd00:10:244:2::/64"), "192.168.1.2", "fd00::2")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", routes: []string{"10.244.2.0/24 via 192.168.1.2 (node b)", "fd00:10:244:2::/64 via fd00::2 (node b)"}}},
		{"legacy spec.podCIDR only", []*corev1.Node{self, func() *corev1.Node {
			n := node("b", nil, "192.168.1.2")
			n.Spec.PodCIDR = "10.244.2.0/24"
			return n
		}()}, want{own: "10.244.1.0/24 fd00:10:244:1::/64", routes: []string{"10.244.2.0/24 via 192.168.1.2 (node b)"}}},
		{"peer without pod CIDR", []*corev1.Node{self, node("b", nil, "192.168.1.2")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", waiting: []string{"b: node b has no pod CIDR yet: is the controller-manager running with --allocate-node-cidrs?"}}},
		{"peer off-link", []*corev1.Node{self, node("b", cidrs("10.244.2.0/24"), "192.168.7.2")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", waiting: []string{"b: host-gw needs the nodes on one link"}}},
		{"first on-link InternalIP is taken", []*corev1.Node{self, node("b", cidrs("10.244.2.0/24"), "192.168.7.2", "192.168.1.9")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", routes: []string{"10.244.2.0/24 via 192.168.1.9 (node b)"}}},
		{"peer without an address of the family", []*corev1.Node{self, node("b", cidrs("10.244.2.0/24", "fd00:10:244:2::/64"), "192.168.1.2")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", routes: []string{"10.244.2.0/24 via 192.168.1.2 (node b)"}, waiting: []string{"b: no IPv6 InternalIP yet"}}},
		{"peer claims our address", []*corev1.Node{self, node("b", cidrs("10.244.2.0/24"), "192.168.1.1")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", waiting: []string{"b: this node's own address"}}},
		{"peer lists our address, then its own", []*corev1.Node{self, node("b", cidrs("10.244.2.0/24"), "192.168.1.1", "192.168.1.2")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", routes: []string{"10.244.2.0/24 via 192.168.1.2 (node b)"}}},
		{"peer range outside the cluster's", []*corev1.Node{self, node("b", cidrs("0.0.0.0/0"), "192.168.1.2")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", waiting: []string{"b: pod CIDR 0.0.0.0/0 is outside"}}},
		{"peer range not a prefix", []*corev1.Node{self, node("b", cidrs("10.244.2.1/24"), "192.168.1.2")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", waiting: []string{"b: pod CIDR \"10.244.2.1/24\" is not a network prefix"}}},
		{"peer overlaps us", []*corev1.Node{node("b", cidrs("10.244.1.0/25"), "192.168.1.2"), self},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", waiting: []string{"b: pod CIDR 10.244.1.0/25 overlaps node a's"}}},
		{"two peers claim one range: the first by name wins everywhere", []*corev1.Node{self,
			node("c", cidrs("10.244.2.0/24"), "192.168.1.3"), node("b", cidrs("10.244.2.0/24"), "192.168.1.2")},
			want{own: "10.244.1.0/24 fd00:10:244:1::/64", routes: []string{"10.244.2.0/24 via 192.168.1.2 (node b)"}, waiting: []string{"c: overlaps node b's"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := base
			in.nodes = tc.nodes
			p := makePlan(in)
			var own []string
			for _, o := range p.own {
				own = append(own, o.String())
			}
			if got := strings.Join(own, " "); got != tc.want.own {
				t.Errorf("own %q, want %q", got, tc.want.own)
			}
			if tc.want.ownWaiting == "" && p.ownWaiting != "" || !strings.Contains(p.ownWaiting, tc.want.ownWaiting) {
				t.Errorf("own waiting %q, want %q", p.ownWaiting, tc.want.ownWaiting)
			}
			var routes []string
			for _, r := range p.routes {
				routes = append(routes, r.String())
			}
			if !slices.Equal(routes, tc.want.routes) {
				t.Errorf("routes %q, want %q", routes, tc.want.routes)
			}
			if len(p.waiting) != len(tc.want.waiting) {
				t.Fatalf("waiting %v, want %v", p.waiting, tc.want.waiting)
			}
			for i, w := range p.waiting {
				name, sub, _ := strings.Cut(tc.want.waiting[i], ": ")
				if w.Node != name || !strings.Contains(w.Reason, sub) {
					t.Errorf("waiting %v, want %s", w, tc.want.waiting[i])
				}
			}
		})
	}
}

func TestMasqueradeRuleset(t *testing.T) {
	got, err := masqueradeRuleset(prefixes("10.244.0.0/16", "fd00:10:244::/56"))
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "testdata/masquerade.nft", []byte(got))
	for _, bad := range [][]netip.Prefix{
		prefixes("10.244.0.0/16", "10.245.0.0/16"),
		{netip.MustParsePrefix("10.244.0.1/16")},
	} {
		if _, err := masqueradeRuleset(bad); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}

func TestRelevantChange(t *testing.T) {
	a := node("b", cidrs("10.244.2.0/24"), "192.168.1.2")
	a.ResourceVersion = "1"
	heartbeat := a.DeepCopy()
	heartbeat.ResourceVersion = "2"
	moved := heartbeat.DeepCopy()
	moved.Status.Addresses[0].Address = "192.168.1.3"
	for _, tc := range []struct {
		name     string
		old, cur *corev1.Node
		want     bool
	}{
		{"resync", a, a.DeepCopy(), true},
		{"status heartbeat", a, heartbeat, false},
		{"address changed", a, moved, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := slimNode(tc.old)
			c, _ := slimNode(tc.cur)
			if got := relevantChange(o, c); got != tc.want {
				t.Fatalf("relevantChange = %v, want %v", got, tc.want)
			}
		})
	}
}
