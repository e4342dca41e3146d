package master

import (
	"slices"
	"testing"
)

// TestOwnedNames: reset's lists come from the declarations, and every
// component kind anvil declares is in them.
func TestOwnedNames(t *testing.T) {
	units := OwnedUnits()
	for _, u := range []string{"anvil-etcd.service", "kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service", "anvil-vip.service", "anvil-agent.service", "anvil-backup.service", "anvil-backup.timer", "anvil-certs-renew.service", "anvil-certs-renew.timer"} {
		if !slices.Contains(units, u) {
			t.Errorf("units %v lack %s", units, u)
		}
	}
	pods := OwnedStaticPods()
	for _, n := range []string{Etcd, APIServer, ControllerManager, Scheduler} {
		if !slices.Contains(pods, n) {
			t.Errorf("static pods %v lack %s", pods, n)
		}
	}
}
