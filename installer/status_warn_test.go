package installer

import (
	"slices"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/master"
)

// TestHostStatusWarnsOfCertificates: a CA close to its end is a warning in
// the host's status, beside its problems; the host stays healthy.
func TestHostStatusWarnsOfCertificates(t *testing.T) {
	warning := "CA ca (/etc/kubernetes/pki/ca.crt) expires 2030-03-31T00:00:00Z, in 89 days"
	h := &host{Host: v1alpha1.Host{Name: "m1", Role: v1alpha1.RoleMaster}, facts: &Facts{
		Node:   &master.NodeState{Node: "m1", Role: v1alpha1.RoleMaster},
		Status: &master.Status{Healthy: true, Certificates: &master.CertSummary{Soonest: "ca", Warnings: []string{warning}}},
	}}
	hs := hostStatus(h, map[string]nodeState{"m1": {Ready: true}}, nil, []etcdMember{{name: "m1"}})
	if !slices.Equal(hs.Warnings, []string{warning}) {
		t.Errorf("warnings %q", hs.Warnings)
	}
	if slices.Contains(hs.Problems, warning) {
		t.Errorf("the warning is a problem: %q", hs.Problems)
	}
}
