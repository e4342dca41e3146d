package installer

import (
	"strings"
	"testing"

	"anvil.dev/anvil/master"
)

func TestAddonsWhy(t *testing.T) {
	tests := []struct {
		drift []string
		want  string
	}{
		{[]string{"deployment/kube-system/coredns", "poddisruptionbudget/kube-system/coredns"},
			"deployment/kube-system/coredns, poddisruptionbudget/kube-system/coredns changed since anvil applied them"},
		{[]string{"pod/kube-system/coredns-b moved off w1 (2 CoreDNS replicas there, none on w2)"},
			"pod/kube-system/coredns-b to move off w1 (2 CoreDNS replicas there, none on w2)"},
		{[]string{"pod/kube-system/coredns-b moved off w1 (2 CoreDNS replicas there, none on w2)", "service/kube-system/kube-dns"},
			"service/kube-system/kube-dns changed since anvil applied them; pod/kube-system/coredns-b to move off w1 (2 CoreDNS replicas there, none on w2)"},
	}
	for _, tt := range tests {
		if got := addonsWhy(tt.drift); got != tt.want {
			t.Errorf("addonsWhy(%q) =\n%q, want\n%q", tt.drift, got, tt.want)
		}
	}
}

// TestPlanAddons: the add-ons are applied again when they drifted, when
// the run joined hosts, and when it waited for a Node to become Ready (a
// join an earlier run started and was cut off from): each can leave
// CoreDNS's replicas on one node while another runs none.
func TestPlanAddons(t *testing.T) {
	tests := []struct {
		name        string
		drift       []string
		planned     []PlannedStep
		becameReady int32
		want        string // the step's start; "" when it changes nothing
	}{
		{name: "as applied", planned: []PlannedStep{{Phase: "upload", Change: true}}},
		{name: "drifted", drift: []string{"service/kube-system/kube-dns"}, want: "re-apply the cluster add-ons (anvil addons apply): service/kube-system/kube-dns changed"},
		{name: "joined", planned: []PlannedStep{{Phase: "join-workers", Change: true}}, want: "re-apply the cluster add-ons (anvil addons apply): nodes joined or became Ready"},
		{name: "a join planned, not changing", planned: []PlannedStep{{Phase: "join-workers"}}},
		{name: "a Node waited for", becameReady: 1, want: "re-apply the cluster add-ons (anvil addons apply): nodes joined or became Ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestRun(t, "m1", "w1")
			r.primary = r.hosts[0]
			r.primary.facts = &Facts{Status: &master.Status{AddonDrift: tt.drift}}
			r.apply = &applyState{}
			r.apply.becameReady.Store(tt.becameReady)
			r.planned = tt.planned
			pl := planAddons(r)
			if len(pl.steps) != 1 {
				t.Fatalf("%d steps, want 1", len(pl.steps))
			}
			s := pl.steps[0]
			switch {
			case tt.want == "" && s.run != nil:
				t.Errorf("plans %q, want nothing to do", s.do)
			case tt.want != "" && (s.run == nil || !strings.HasPrefix(s.do, tt.want)):
				t.Errorf("plans %q (runs: %v), want %q…", s.do, s.run != nil, tt.want)
			}
		})
	}
}
