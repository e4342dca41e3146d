package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

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

// TestRenewLeaseReleasedAfterRestarts: the release right after this
// master's components restarted keeps trying through failed requests and
// clients that cannot be made, so the next master's turn is not held up
// until the lease runs out; a lease another master holds is left alone.
func TestRenewLeaseReleasedAfterRestarts(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	if h, err := tryRenewLease(ctx, cs, "m1", time.Now()); err != nil || h != "m1" {
		t.Fatalf("take: %s %v", h, err)
	}
	updates := 0
	cs.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if updates++; updates <= 2 {
			return true, nil, errors.New("http2: client connection lost")
		}
		return false, nil, nil
	})
	clients := 0
	client := func() (kubernetes.Interface, error) {
		if clients++; clients == 1 {
			return nil, errors.New("read admin.conf: being replaced")
		}
		return cs, nil
	}
	releaseRenewLease(ctx, client, "m1", time.Millisecond, slog.New(slog.DiscardHandler))
	if h, err := tryRenewLease(ctx, cs, "m2", time.Now()); err != nil || h != "m2" {
		t.Fatalf("after m1 released it: %s %v (updates %d, clients %d)", h, err, updates, clients)
	}
	if updates < 3 || clients < 4 {
		t.Errorf("updates %d, clients %d: the failures were not retried", updates, clients)
	}
	releaseRenewLease(ctx, func() (kubernetes.Interface, error) { return cs, nil }, "m1", time.Millisecond, slog.New(slog.DiscardHandler))
	if h, err := tryRenewLease(ctx, cs, "m3", time.Now()); err != nil || h != "m2" {
		t.Fatalf("m1's release took m2's lease: %s %v", h, err)
	}
}

// TestRenewTurnEndsBeforeExpiry: a master whose lease another holds
// waits for its turn, but not past the time its due certificates need to
// be renewed by; without that time it gives up after the wait.
func TestRenewTurnEndsBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	if h, err := tryRenewLease(ctx, cs, "m1", time.Now()); err != nil || h != "m1" {
		t.Fatalf("take: %s %v", h, err)
	}
	client := func() (kubernetes.Interface, error) { return cs, nil }
	log := slog.New(slog.DiscardHandler)
	start := time.Now()
	release, err := takeRenewTurn(ctx, client, "m2", time.Minute, time.Millisecond, time.Now().Add(50*time.Millisecond), log)
	if err != nil {
		t.Fatalf("with the certificates about to expire: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("waited %s, past the time to renew by", took)
	}
	release()
	if h, err := tryRenewLease(ctx, cs, "m3", time.Now()); err != nil || h != "m1" {
		t.Fatalf("m2 renewed without its turn, and then moved m1's lease: %s %v", h, err)
	}
	if _, err := takeRenewTurn(ctx, client, "m2", 50*time.Millisecond, time.Millisecond, time.Time{}, log); err == nil || !strings.Contains(err.Error(), "held by m1") {
		t.Fatalf("with time left, the wait ends in %v, want the holder named", err)
	}
}

// TestTurnUntil: a twelfth of the shortest lifetime before the first due
// certificate expires, an hour at most; certificates not due do not count.
func TestTurnUntil(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := pki.Expiration{Certificates: []pki.Expiry{
		{Name: "apiserver", Issued: t0, Expires: t0.Add(6 * time.Minute)},
		{Name: "etcd-peer", Issued: t0, Expires: t0.Add(5 * time.Minute)},
		{Name: "front-proxy-client", Issued: t0, Expires: t0.Add(2 * time.Minute)},
		{Name: "admin.conf", Issued: t0, Expires: t0.Add(365 * 24 * time.Hour)},
	}}
	if got, want := turnUntil(exp, []string{"apiserver", "etcd-peer"}), t0.Add(5*time.Minute-25*time.Second); !got.Equal(want) {
		t.Errorf("minutes: %s, want %s", got, want)
	}
	if got, want := turnUntil(exp, []string{"admin.conf"}), t0.Add(365*24*time.Hour-time.Hour); !got.Equal(want) {
		t.Errorf("a year: %s, want %s", got, want)
	}
	if got := turnUntil(exp, nil); !got.IsZero() {
		t.Errorf("nothing due: %s", got)
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
