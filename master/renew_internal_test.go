package master

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/pki"
)

// TestRenewalRestartsEveryReader: each leaf and kubeconfig a component
// reads restarts that component when renewed, read off the declarations;
// only the ones no component reads (an operator's, a probe's) restart
// nothing.
func TestRenewalRestartsEveryReader(t *testing.T) {
	p := referencePlan()
	cs, err := Components(p)
	if err != nil {
		t.Fatal(err)
	}
	nobody := []string{pki.AdminKubeconfig, pki.SuperAdminKubeconfig, "etcd-healthcheck-client"}
	want := map[string][]string{
		"apiserver":                     {APIServer},
		"apiserver-etcd-client":         {APIServer},
		"apiserver-kubelet-client":      {APIServer},
		"front-proxy-client":            {APIServer},
		"etcd-server":                   {Etcd},
		"etcd-peer":                     {Etcd},
		pki.ControllerManagerKubeconfig: {ControllerManager},
		pki.SchedulerKubeconfig:         {Scheduler},
		pki.VIPKubeconfig:               {VIP},
		pki.ApproverKubeconfig:          {Approver},
	}
	for _, s := range pki.Certificates() {
		path := p.cert(s.BaseName)
		checkReaders(t, s.Name, readers(cs, []string{path}), want[s.Name], slices.Contains(nobody, s.Name))
	}
	for _, s := range pki.Kubeconfigs() {
		path := p.kubeconfig(s.Name)
		checkReaders(t, s.Name, readers(cs, []string{path}), want[s.Name], slices.Contains(nobody, s.Name))
	}
	// Several at once: each component once, in start order.
	all := readers(cs, []string{p.kubeconfig(pki.SchedulerKubeconfig), p.cert("etcd/server"), p.cert("apiserver")})
	if got := names(all); strings.Join(got, ",") != Etcd+","+APIServer+","+Scheduler {
		t.Errorf("restart order %v", got)
	}
}

func checkReaders(t *testing.T, name string, got []component.Spec, want []string, nobody bool) {
	t.Helper()
	switch {
	case nobody && len(got) > 0:
		t.Errorf("%s: restarts %v, want nothing", name, names(got))
	case !nobody && len(want) == 0:
		t.Errorf("%s: renewable, but the test does not say which component reads it (it restarts %v)", name, names(got))
	case !nobody && !slices.Equal(names(got), want):
		t.Errorf("%s: restarts %v, want %v", name, names(got), want)
	}
}

func names(cs []component.Spec) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestRenewLeaseTurns: one master at a time holds the renewal lease; a
// holder that died frees it when the lease runs out.
func TestRenewLeaseTurns(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if h, err := tryRenewLease(ctx, cs, "m1", now); err != nil || h != "m1" {
		t.Fatalf("first: %s %v", h, err)
	}
	if h, err := tryRenewLease(ctx, cs, "m2", now.Add(time.Minute)); err != nil || h != "m1" {
		t.Fatalf("while m1 holds it: %s %v", h, err)
	}
	if h, err := tryRenewLease(ctx, cs, "m1", now.Add(time.Minute)); err != nil || h != "m1" {
		t.Fatalf("m1 again: %s %v", h, err)
	}
	if h, err := tryRenewLease(ctx, cs, "m2", now.Add(renewLeaseTime+2*time.Minute)); err != nil || h != "m2" {
		t.Fatalf("after m1's lease ran out: %s %v", h, err)
	}
}

// TestRenewalRecord keeps the last keptRenewals runs, oldest first, in a
// file only root reads.
func TestRenewalRecord(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	if got, err := ReadRenewals(root); err != nil || got != nil {
		t.Fatalf("none yet: %v %v", got, err)
	}
	for i := range keptRenewals + 3 {
		if err := recordRenewal(root, Renewal{Time: time.Unix(int64(i), 0), Renewed: []string{fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadRenewals(root)
	if err != nil || len(got) != keptRenewals || got[0].Renewed[0] != "3" || got[len(got)-1].Renewed[0] != fmt.Sprint(keptRenewals+2) {
		t.Fatalf("%d records, first %v, err %v", len(got), got[0], err)
	}
	fi, err := os.Stat(root.Path(RenewalsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want mode 0600", RenewalsFile, fi, err)
	}
}

func TestRenewSchedule(t *testing.T) {
	for _, tt := range []struct {
		validity time.Duration
		period   time.Duration
		calendar string
	}{
		{365 * 24 * time.Hour, time.Hour, "hourly"},
		{5 * time.Hour, 30 * time.Minute, "*:0/30"},
		{25 * time.Minute, 2 * time.Minute, "*:0/2"},
		{4 * time.Minute, 24 * time.Second, "*:*:0/24"},
		{time.Minute, 10 * time.Second, "*:*:0/10"},
	} {
		p := referencePlan()
		p.Cluster.PKI.CertValidity.Duration = tt.validity
		if got := RenewPeriod(p.Cluster); got != tt.period {
			t.Errorf("certValidity %s: period %s, want %s", tt.validity, got, tt.period)
		}
		files, err := component.TimerUnits(renewJob(p))
		if err != nil {
			t.Fatal(err)
		}
		if timer := string(files[1].Data); !strings.Contains(timer, "\nOnCalendar="+tt.calendar+"\n") || !strings.Contains(timer, "\nAccuracySec=") {
			t.Errorf("certValidity %s: timer\n%s", tt.validity, timer)
		}
		if svc := string(files[0].Data); !strings.Contains(svc, "ExecStart=/usr/local/bin/anvil certs renew-due --log-format json\n") {
			t.Errorf("service\n%s", svc)
		}
	}
}
