package approver

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Options shape the approver.
type Options struct {
	// OwnBootstrapApproval means anvil is the only approver of bootstrap
	// client CSRs: a CSR from a bootstrap token bound to no node (the
	// default-node-token group included) is denied instead of left to the
	// controller-manager. Turn it on only once the ClusterRoleBinding
	// kubeadm:node-autoapprove-bootstrap is gone, or the controller-manager
	// approves those CSRs before the approver denies them.
	OwnBootstrapApproval bool
	// Identity is this instance's name in the Lease; the host name and a
	// random suffix when empty.
	Identity string
	// Log receives the approver's logs; discarded when nil.
	Log *slog.Logger

	// The leader lease's timing, as the controller-manager's defaults when
	// zero: 15 s lease, 10 s renew deadline, 2 s between tries.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// PendingRetries bounds how often a pending CSR (its Node does not exist
	// yet) is looked at again, backing off from RetryBase to RetryMax
	// (12, 250 ms, 30 s: about three minutes); after that only a change of
	// its Node brings it back. Errors are retried without bound.
	PendingRetries      int
	RetryBase, RetryMax time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return o, fmt.Errorf("approver identity: %w", err)
		}
		o.Identity = host + "_" + rand.Text()[:8]
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&o.LeaseDuration, 15 * time.Second}, {&o.RenewDeadline, 10 * time.Second}, {&o.RetryPeriod, 2 * time.Second},
		{&o.RetryBase, 250 * time.Millisecond}, {&o.RetryMax, 30 * time.Second},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if o.PendingRetries == 0 {
		o.PendingRetries = 12
	}
	return o, nil
}

// Run approves and denies node CSRs (see Decide) while this instance holds
// the Lease LeaseNamespace/LeaseName, campaigning again whenever it loses
// it, until ctx is done; then it releases the Lease and returns nil. cs
// must authenticate as User, with RBAC's objects in place.
//
// Only one instance decides at a time, but correctness does not rest on
// that: every verdict is written against the resourceVersion it was made
// on, so two instances overlapping for a moment cannot decide a CSR twice.
func Run(ctx context.Context, cs kubernetes.Interface, o Options) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	log := o.Log.With("component", LeaseName)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: LeaseNamespace, Name: LeaseName},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity},
	}
	for ctx.Err() == nil {
		// OnStartedLeading runs on a goroutine of the elector's that the
		// elector does not wait for; the controller runs here instead, so
		// a term's controller has stopped before the next campaign.
		leading := make(chan context.Context, 1)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            LeaseName,
			LeaseDuration:   o.LeaseDuration,
			RenewDeadline:   o.RenewDeadline,
			RetryPeriod:     o.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) { leading <- lctx },
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election on lease %s/%s: %w", LeaseNamespace, LeaseName, err)
		}
		ectx, cancel := context.WithCancel(ctx)
		elected := make(chan struct{})
		go func() {
			defer close(elected)
			le.Run(ectx)
		}()
		log.Info("campaigning for the lease", "identity", o.Identity)
		select {
		case lctx := <-leading:
			log.Info("leading", "identity", o.Identity)
			c := &controller{cs: cs, o: o, log: log}
			err = c.run(lctx)
		case <-elected:
		}
		cancel()
		<-elected
		if err != nil {
			return fmt.Errorf("approver: %w", err)
		}
		if ctx.Err() == nil {
			log.Warn("lost the lease; campaigning again", "identity", o.Identity)
		}
	}
	return nil
}
