package installer

import (
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/master"
)

// TestBackupSource: the snapshot is taken on the etcd leader as the
// masters report it, else on a healthy master, else nowhere.
func TestBackupSource(t *testing.T) {
	master3 := func(leader string, healthy ...bool) *run {
		r := &run{}
		for i, name := range []string{"m1", "m2", "m3"} {
			st := &master.Status{Healthy: healthy[i], Etcd: &master.EtcdStatus{Leader: leader}}
			r.hosts = append(r.hosts, &host{
				Host:  v1alpha1.Host{Name: name, Role: v1alpha1.RoleMaster},
				facts: &Facts{Node: &master.NodeState{Node: name, Role: v1alpha1.RoleMaster}, Status: st},
			})
		}
		return r
	}
	for _, tc := range []struct {
		name string
		r    *run
		want string
	}{
		{"the leader", master3("m2", true, true, true), "m2"},
		{"the leader even when its status is not all healthy", master3("m3", true, true, false), "m3"},
		{"no leader reported: a healthy master", master3("", false, true, true), "m2"},
		{"nothing healthy and no leader", master3("", false, false, false), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, why := backupSource(tc.r)
			if got := nameOfOrEmpty(h); got != tc.want || (h != nil && why == "") {
				t.Errorf("backupSource = %q (%s), want %q", got, why, tc.want)
			}
		})
	}
}

func nameOfOrEmpty(h *host) string {
	if h == nil {
		return ""
	}
	return h.Name
}

func TestCheckBackupForCluster(t *testing.T) {
	c := &v1alpha1.Cluster{Name: "lab"}
	h := envelope.BackupHeader{Cluster: "lab", KubernetesVersion: v1alpha1.DefaultKubernetesVersion}
	if err := checkBackupForCluster(c, h, false); err != nil {
		t.Errorf("the cluster's own backup: %v", err)
	}
	other := h
	other.Cluster = "prod"
	if err := checkBackupForCluster(c, other, false); err == nil || !strings.Contains(err.Error(), `cluster "prod"`) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("another cluster's backup: %v", err)
	}
	if err := checkBackupForCluster(c, other, true); err != nil {
		t.Errorf("another cluster's backup with force: %v", err)
	}
	future := h
	future.KubernetesVersion = "v1.99.0"
	if err := checkBackupForCluster(c, future, true); err == nil || !strings.Contains(err.Error(), "cannot run") {
		t.Errorf("a version anvil cannot run, even forced: %v", err)
	}
}
