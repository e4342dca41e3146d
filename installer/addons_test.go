package installer

import "testing"

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
