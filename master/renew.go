package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// Automatic renewal: every master runs `anvil certs renew --due` on a
// timer (RenewJobName). A run renews the leaves and kubeconfigs that have
// a third of their lifetime or less left (pki.Due), then restarts the
// components that read them, one at a time, each ready before the next.
// The masters take turns through a Lease (RenewLease), so no two restart
// their components at once and etcd's quorum and the API stay up. Each
// run that renewed something is recorded (RenewalsFile), which `anvil
// certs check-expiration` shows.

const (
	// RenewJobName names the renewal timer and its service.
	RenewJobName = "anvil-certs-renew"
	// RenewLease is the kube-system Lease a master holds while it renews
	// and restarts.
	RenewLease = "anvil-certs-renewal"
	// RenewalsFile records the renewals this master made.
	RenewalsFile = hostfs.StateDir + "/certs-renewals.json"
	// keptRenewals is how many records RenewalsFile keeps.
	keptRenewals = 20
	// renewLeaseTime bounds how long a master may hold RenewLease: a
	// master that died holding it blocks the others no longer.
	renewLeaseTime = 10 * time.Minute
	// renewTurnPause is the time between two tries to take RenewLease,
	// or to hand it back.
	renewTurnPause = 2 * time.Second
)

// Renewal is one run of RenewDue that renewed something.
type Renewal struct {
	// Time is when the run took its turn and began renewing.
	Time time.Time `json:"time"`
	// Finished is when its last restarted component was ready again.
	Finished time.Time `json:"finished,omitzero"`
	// Renewed are the leaves and kubeconfigs issued again.
	Renewed []string `json:"renewed"`
	// Restarted are the components restarted, in order.
	Restarted []string `json:"restarted,omitempty"`
	// Error is why the run did not finish.
	Error string `json:"error,omitempty"`
}

// RenewOptions are RenewDue's.
type RenewOptions struct {
	Root hostfs.Root
	Log  *slog.Logger
	Task *progress.Task
	// Now is the time due certificates are judged at; zero is now. A
	// later time renews ahead what falls due by then.
	Now time.Time
	// Wait bounds the wait for the other masters' turn; zero is five
	// minutes.
	Wait time.Duration
}

// RenewResult is what RenewDue did.
type RenewResult struct {
	// Renewal is what was renewed and restarted; nil when nothing was due.
	Renewal *Renewal `json:"renewal,omitempty"`
	// NextDue is when the next leaf or kubeconfig falls due.
	NextDue time.Time `json:"nextDue,omitzero"`
	// Warnings are what cannot be renewed here (an external CA's leaves)
	// and CAs close to their end.
	Warnings []string `json:"warnings,omitempty"`
}

// RenewDue renews this master's due leaves and kubeconfigs and restarts
// what reads them (see above). With nothing due it changes nothing.
func RenewDue(ctx context.Context, o RenewOptions) (*RenewResult, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, p, err := installedMaster(o.Root, "the kubelet renews a worker's certificates through the API")
	if err != nil {
		return nil, err
	}
	if st.Layout == v1alpha1.LayoutProcess {
		// Only the process layout runs things under the root itself.
		p.Root = o.Root
	}
	p, err = p.Complete()
	if err != nil {
		return nil, err
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	dir, kubeconfigs := o.Root.Path(hostfs.PKIDir), o.Root.Path(hostfs.KubernetesDir)
	exp, err := pki.CheckExpiration(dir, pki.Options{KubeconfigDir: kubeconfigs, Now: now})
	if err != nil {
		return nil, err
	}
	due, cannot := pki.Due(exp, now)
	res := &RenewResult{NextDue: nextDue(exp, due), Warnings: append(cannot, pki.CAWarnings(exp, time.Now())...)}
	for _, w := range res.Warnings {
		log.Warn("certificate", "warning", w)
	}
	if len(due) == 0 {
		return res, nil
	}
	cp := &ControlPlane{Plan: p, Layout: st.Layout, Root: o.Root, Anvil: p.AnvilBinary, Log: log, Task: o.Task}
	release, err := takeRenewTurn(ctx, cp.adminClient, st.Node, o.Wait, renewTurnPause, turnUntil(exp, due), log)
	if err != nil {
		return nil, err
	}
	defer release()
	// From when this master's turn began.
	rec := &Renewal{Time: time.Now().UTC()}
	res.Renewal = rec
	err = renewAndRestart(ctx, cp, dir, kubeconfigs, due, rec, log)
	if err != nil {
		rec.Error = err.Error()
	}
	rec.Finished = time.Now().UTC()
	if werr := recordRenewal(o.Root, *rec); werr != nil {
		err = errors.Join(err, werr)
	}
	return res, err
}

func renewAndRestart(ctx context.Context, cp *ControlPlane, dir, kubeconfigs string, due []string, rec *Renewal, log *slog.Logger) error {
	cfg, err := pki.ConfigFromCluster(cp.Plan.Cluster, cp.Plan.Node.Name)
	if err != nil {
		return err
	}
	results, err := pki.Renew(dir, cfg, due, pki.Options{KubeconfigDir: kubeconfigs})
	if err != nil {
		return err
	}
	var paths []string
	for _, r := range results {
		rec.Renewed = append(rec.Renewed, r.Name)
		paths = append(paths, r.Path)
	}
	log.Info("renewed", "names", strings.Join(rec.Renewed, ","))
	restarted, err := cp.restartReaders(ctx, paths, log)
	rec.Restarted = restarted
	if err != nil {
		return fmt.Errorf("restart to read the renewed certificates: %w", err)
	}
	return nil
}

// restartReaders restarts the components that read a file in hostPaths
// (paths under cp.Root), one at a time in start order, each ready before
// the next, the VIP handed to another master first; it returns those it
// restarted. Its error names the component that did not come back.
func (cp *ControlPlane) restartReaders(ctx context.Context, hostPaths []string, log *slog.Logger) ([]string, error) {
	var paths []string // as the components name them
	for _, p := range hostPaths {
		rel, err := filepath.Rel(cp.Root.Path("/"), p)
		if err != nil {
			return nil, err
		}
		paths = append(paths, cp.Plan.Root.Path("/"+rel))
	}
	cs, err := cp.Components()
	if err != nil {
		return nil, err
	}
	return cp.restartInTurn(ctx, readers(cs, paths), log)
}

// restartInTurn restarts each of restart in turn, each ready before the
// next; when the VIP manager is among others it is stopped first, so that
// another master takes the VIP, and started again last. It returns those
// it restarted; its error names the component that did not come back.
func (cp *ControlPlane) restartInTurn(ctx context.Context, restart []component.Spec, log *slog.Logger) ([]string, error) {
	var restarted []string
	var handedOver *component.Spec
	if i := slices.IndexFunc(restart, func(s component.Spec) bool { return s.Name == VIP }); i >= 0 && len(restart) > 1 && cp.Layout != v1alpha1.LayoutStaticPod {
		// This master's apiserver talks to its own etcd member alone:
		// while either restarts, requests to the VIP here fail. So the
		// VIP goes first: its manager stops (releasing the Lease), another
		// master takes the VIP, and the manager starts again last.
		vip := restart[i]
		restart = append(slices.Delete(restart, i, i+1), vip)
		if err := cp.handOverVIP(ctx, vip, log); err != nil {
			return nil, err
		}
		handedOver = &vip
		defer func() {
			if handedOver != nil { // a restart before it failed
				if err := cp.Start(ctx, []component.Spec{*handedOver}); err != nil {
					log.Error("start the VIP manager again", "err", err)
				}
			}
		}()
	}
	for _, s := range restart {
		start := time.Now()
		var err error
		if handedOver != nil && s.Name == handedOver.Name {
			handedOver = nil
			if err = cp.Start(ctx, []component.Spec{s}); err == nil {
				err = cp.WaitReady(ctx, []component.Spec{s}, time.Minute)
			}
		} else {
			err = cp.restart(ctx, s)
		}
		if err != nil {
			return restarted, fmt.Errorf("%s: %w", s.Name, err)
		}
		restarted = append(restarted, s.Name)
		log.Info("restarted", "component", s.Name, "took", time.Since(start).Round(10*time.Millisecond).String())
	}
	return restarted, nil
}

// handOverVIP stops this master's VIP manager, which releases the VIP's
// Lease, and waits (15 s at most) until another master holds it. A
// master that does not hold the VIP just stops its manager.
func (c *ControlPlane) handOverVIP(ctx context.Context, vip component.Spec, log *slog.Logger) error {
	holder := func() string {
		cs, err := c.Client(pki.AdminKubeconfig)
		if err != nil {
			return ""
		}
		l, err := cs.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, VIPLease, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	held := holder() == c.Plan.Node.Name
	if err := c.Stop(ctx, []component.Spec{vip}, 10*time.Second, false); err != nil {
		return fmt.Errorf("stop the VIP manager to hand the VIP over: %w", err)
	}
	if !held {
		return nil
	}
	start := time.Now()
	err := waitUntil(ctx, 15*time.Second, "another master to take the VIP", func() bool {
		h := holder()
		return h != "" && h != c.Plan.Node.Name
	})
	if err != nil {
		// One master alone, or none able: the restarts go on, as they
		// would without a VIP.
		log.Warn("the VIP stays unserved while this master restarts", "err", err)
		return nil
	}
	log.Info("handed the VIP over", "to", holder(), "took", time.Since(start).Round(10*time.Millisecond).String())
	return nil
}

// readers are the components of cs, in start order, that read a file in
// paths: on their command line or among their files.
func readers(cs []component.Spec, paths []string) []component.Spec {
	var out []component.Spec
	for _, s := range cs {
		reads := slices.ContainsFunc(s.Args, func(a component.Arg) bool { return slices.Contains(paths, a.Value) }) ||
			slices.ContainsFunc(s.Files, func(f component.File) bool { return !f.Dir && slices.Contains(paths, f.Path) })
		if reads {
			out = append(out, s)
		}
	}
	return out
}

// restart has s read its files again and waits until it is ready. In the
// static-pod layout the kubelet restarts a static pod whose manifest
// leaves the manifests directory and comes back, as kubeadm's manual
// renewal procedure does.
func (c *ControlPlane) restart(ctx context.Context, s component.Spec) error {
	switch {
	case c.Layout == v1alpha1.LayoutStaticPod && s.Image.Ref != "":
		if err := c.bounceStaticPod(ctx, s); err != nil {
			return err
		}
	case c.Layout == v1alpha1.LayoutProcess:
		if err := c.restartProcess(ctx, s); err != nil {
			return err
		}
	default:
		o := c.LayoutOptions()
		o.Layout = v1alpha1.LayoutSystemd // the static-pod layout's units too
		if err := layout.Restart(ctx, o, []component.Spec{s}); err != nil {
			return err
		}
	}
	return c.WaitReady(ctx, []component.Spec{s}, 3*time.Minute)
}

// restartProcess has the supervisor restart s and waits for the new
// process, so that the wait for ready does not ask the old one.
func (c *ControlPlane) restartProcess(ctx context.Context, s component.Spec) error {
	pid := func() int {
		st, err := supervise.ReadStatus(c.Root)
		if err != nil {
			return 0
		}
		p, _ := st.Process(s.Name)
		return p.PID
	}
	old := pid()
	if err := layout.Restart(ctx, c.LayoutOptions(), []component.Spec{s}); err != nil {
		return err
	}
	return waitUntil(ctx, 90*time.Second, "the supervisor to start "+s.Name+" again", func() bool {
		n := pid()
		return n > 0 && n != old
	})
}

// bounceStaticPod moves s's manifest out of the kubelet's directory,
// waits until the pod is gone (its ports closed), and puts it back.
func (c *ControlPlane) bounceStaticPod(ctx context.Context, s component.Spec) error {
	manifest := filepath.Join(c.Root.Manifests(), s.Name+".yaml")
	aside := c.Root.Path(hostfs.StateDir + "/restarting-" + s.Name + ".yaml")
	if err := os.Rename(manifest, aside); err != nil {
		return fmt.Errorf("move %s aside: %w", manifest, err)
	}
	gone := waitUntil(ctx, 90*time.Second, "the kubelet to stop "+s.Name, func() bool {
		running, _ := c.Running([]component.Spec{s})
		return len(running) == 0
	})
	if err := os.Rename(aside, manifest); err != nil {
		return fmt.Errorf("put back %s (it is at %s): %w", manifest, aside, err)
	}
	return gone
}

func waitUntil(ctx context.Context, limit time.Duration, what string, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for !ok() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waited %s for %s", limit, what)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// takeRenewTurn waits until this master holds RenewLease. When the API
// cannot be reached the renewal goes on without it: certificates that
// expire are what keeps an API down, and a master that cannot reach its
// own apiserver is out of the quorum's count already.
//
// With until set, the wait ends by then and the renewal goes on without
// the turn: waiting on a lease that is not handed back (its holder's
// release failed, or it died) must not let this master's certificates
// expire.
//
// client makes a client of this master's apiserver; pause is the time
// between two tries.
func takeRenewTurn(ctx context.Context, client func() (kubernetes.Interface, error), node string, wait, pause time.Duration, until time.Time, log *slog.Logger) (func(), error) {
	cs, err := client()
	if err == nil {
		_, err = cs.Discovery().ServerVersion()
	}
	if err != nil {
		log.Warn("renewing without taking turns with the other masters: the API cannot be reached", "err", err)
		return func() {}, nil
	}
	if wait <= 0 {
		wait = 5 * time.Minute
	}
	deadline := time.Now().Add(wait)
	for {
		holder, err := tryRenewLease(ctx, cs, node, time.Now())
		if err == nil && holder == node {
			break
		}
		why := "held by " + holder
		if err != nil {
			why = err.Error()
		}
		if !until.IsZero() && time.Now().After(until) {
			log.Warn("renewing without taking turns with the other masters: the certificates due would expire before the turn comes", "lease", RenewLease, "why", why, "waited-until", until.Format(time.RFC3339))
			return func() {}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lease %s/%s: not this master's turn after %s (%s): the next run tries again", metav1.NamespaceSystem, RenewLease, wait, why)
		}
		log.Info("waiting for another master to finish renewing", "lease", RenewLease, "why", why)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
	}
	return func() { releaseRenewLease(ctx, client, node, pause, log) }, nil
}

// adminClient is a client of this master's apiserver as admin.conf's user.
func (c *ControlPlane) adminClient() (kubernetes.Interface, error) {
	return c.Client(pki.AdminKubeconfig)
}

// turnUntil is how long a renewal of due may wait for its turn: until a
// twelfth of the shortest lifetime among them (an hour at most) is left
// before the first of them expires, time enough to renew (etcd and the
// apiserver read renewed files at their next handshake) and restart.
func turnUntil(exp pki.Expiration, due []string) time.Time {
	var until time.Time
	for _, e := range exp.Certificates {
		if !slices.Contains(due, e.Name) {
			continue
		}
		at := e.Expires.Add(-min(e.Expires.Sub(e.Issued)/12, time.Hour))
		if until.IsZero() || at.Before(until) {
			until = at
		}
	}
	return until
}

// releaseRenewLease hands RenewLease back when node holds it. The
// components it talks to were just restarted, so it tries for a minute,
// every pause, with a client made again each time (the renewal replaced
// its kubeconfig): a lease left held would keep the other masters from their
// turn until it expires, and their certificates may fall due before that.
func releaseRenewLease(ctx context.Context, client func() (kubernetes.Interface, error), node string, pause time.Duration, log *slog.Logger) {
	// Released, not deleted: its history stays readable.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var err error
	for attempt := 0; ; attempt++ {
		if err = releaseRenewLeaseOnce(ctx, client, node); err == nil {
			if attempt > 0 {
				log.Info("released the lease", "lease", RenewLease, "attempts", attempt+1)
			}
			return
		}
		select {
		case <-ctx.Done():
			log.Warn("release lease: the other masters wait until it expires", "lease", RenewLease, "expires-in", renewLeaseTime.String(), "err", err)
			return
		case <-time.After(pause):
		}
	}
}

func releaseRenewLeaseOnce(ctx context.Context, client func() (kubernetes.Interface, error), node string) error {
	cs, err := client()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	leases := cs.CoordinationV1().Leases(metav1.NamespaceSystem)
	l, err := leases.Get(rctx, RenewLease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != node {
		return err
	}
	l.Spec.HolderIdentity = nil
	_, err = leases.Update(rctx, l, metav1.UpdateOptions{})
	return err
}

// tryRenewLease takes RenewLease for node when it is free, expired or
// node's already, and returns who holds it.
func tryRenewLease(ctx context.Context, cs kubernetes.Interface, node string, now time.Time) (string, error) {
	leases := cs.CoordinationV1().Leases(metav1.NamespaceSystem)
	seconds := int32(renewLeaseTime / time.Second)
	mine := coordinationv1.LeaseSpec{HolderIdentity: &node, LeaseDurationSeconds: &seconds,
		AcquireTime: &metav1.MicroTime{Time: now}, RenewTime: &metav1.MicroTime{Time: now}}
	l, err := leases.Get(ctx, RenewLease, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: RenewLease}, Spec: mine}, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}
		return node, nil
	}
	if err != nil {
		return "", err
	}
	if h := l.Spec.HolderIdentity; h != nil && *h != "" && *h != node && !leaseExpired(l.Spec, now) {
		return *h, nil
	}
	l.Spec = mine
	// The update carries the resourceVersion read: of two masters taking
	// a free lease at once, one fails with a conflict.
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		return "", err
	}
	return node, nil
}

func leaseExpired(s coordinationv1.LeaseSpec, now time.Time) bool {
	if s.RenewTime == nil || s.LeaseDurationSeconds == nil {
		return true
	}
	return now.After(s.RenewTime.Add(time.Duration(*s.LeaseDurationSeconds) * time.Second))
}

// nextDue is when the earliest leaf or kubeconfig not renewed now falls
// due.
func nextDue(exp pki.Expiration, renewing []string) time.Time {
	var next time.Time
	for _, e := range exp.Certificates {
		if e.Missing || e.ExternallyManaged || slices.Contains(renewing, e.Name) {
			continue
		}
		if at := e.RenewAt(); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// ReadRenewals reads what RenewalsFile recorded, oldest first; none when
// it does not exist.
func ReadRenewals(root hostfs.Root) ([]Renewal, error) {
	b, err := os.ReadFile(root.Path(RenewalsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Renewal
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("read %s: %w", root.Path(RenewalsFile), err)
	}
	return out, nil
}

func recordRenewal(root hostfs.Root, r Renewal) error {
	all, err := ReadRenewals(root)
	if err != nil {
		return err
	}
	all = append(all, r)
	if len(all) > keptRenewals {
		all = all[len(all)-keptRenewals:]
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(root.Path(RenewalsFile), append(b, '\n'), 0o600, 0o700)
}

// RunRenewLoop is the process layout's renewal timer: RenewDue every
// RenewPeriod (read again from the cluster file each time) until ctx ends.
// A failed run is logged and tried again at the next period.
func RunRenewLoop(ctx context.Context, o RenewOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for {
		res, err := RenewDue(ctx, o)
		switch {
		case errors.Is(err, ErrNotInitialized):
			// Init starts the loop just before it marks the machine.
			log.Info("not initialised yet: nothing to renew")
		case err != nil:
			log.Error("certificate renewal failed", "err", err)
		case res.Renewal != nil:
			log.Info("certificates renewed", "renewed", strings.Join(res.Renewal.Renewed, ","), "restarted", strings.Join(res.Renewal.Restarted, ","))
		}
		c, _, err := v1alpha1.Load(o.Root.Path(ClusterFile))
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(RenewPeriod(c)):
		}
	}
}
