package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/pki"
)

const (
	nodesPath = "/api/v1/nodes"
	// leasePath is the node leases' namespace, kube-node-lease.
	leasePath = "/apis/coordination.k8s.io/v1/namespaces/" + corev1.NamespaceNodeLease + "/leases"
)

// Options are how an Agent runs besides its Config.
type Options struct {
	Log *slog.Logger
	// Metrics, when set, records renewals, status updates and rotations.
	Metrics *Metrics
	// Facts gathers the machine's facts; nil reads this machine's through
	// GatherFacts. Benchmarks running many agents in one process share one.
	Facts func() (Facts, error)
	// OnRenew is told the latency and outcome of every Lease renewal.
	OnRenew func(latency time.Duration, err error)
	// Credentials replace the kubeconfig file (benchmarks); renewals are
	// then kept in memory only.
	Credentials *Credentials
}

// Agent is one node's agent: it registers the Node, renews its Lease,
// posts its status and renews its client certificate. Its life cycle:
//
//	New ─► Run: register (retry with backoff until it works)
//	        ├─ lease loop:  renew every RenewInterval (+≤4%), back off on errors
//	        ├─ status loop: compute every StatusUpdateInterval, post when
//	        │               changed, forced, or StatusReportInterval passed
//	        ├─ learn loop:  read where every apiserver is, every 5 minutes,
//	        │               to fail over to masters it was not told about
//	        └─ rotation:    renew the client certificate at 70–90% of its life
//	ctx done ─► loops return, connections close; Node and Lease stay (the
//	            node lifecycle controller judges a silent node, not the agent)
type Agent struct {
	cfg   *Config
	o     Options
	log   *slog.Logger
	cli   *apiClient
	certs certStore
	creds Credentials
	facts func() (Facts, error)

	mu         sync.Mutex
	node       *corev1.Node // as the apiserver last showed it
	lease      *coordinationv1.Lease
	lastSent   *corev1.NodeStatus
	lastReport time.Time
	verifyAt   time.Time
	pressure   pressure

	// forceStatus makes the next status tick post, after anything that
	// may have let the node lifecycle controller mark the Node Unknown.
	forceStatus atomic.Bool
	// kick runs the status loop at once: the Lease is renewed again after
	// failures, so the Node may be Unknown and should be Ready now, not at
	// the next tick.
	kick       chan struct{}
	registered atomic.Bool
	// tick is the Unix nanoseconds of the last loop iteration, for health.
	tick      atomic.Int64
	lastRenew atomic.Int64
}

// New prepares an agent; it reads the kubeconfig but talks to nobody yet.
func New(cfg *Config, o Options) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("agent: no configuration")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.NodeName)
	var creds Credentials
	if o.Credentials != nil {
		creds = *o.Credentials
	} else {
		var err error
		if creds, err = ReadKubeconfig(cfg.Kubeconfig); err != nil {
			return nil, err
		}
	}
	tc, err := creds.cert()
	if err != nil {
		return nil, fmt.Errorf("node %s: client certificate: %w", cfg.NodeName, err)
	}
	pool, err := creds.caPool()
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.NodeName, err)
	}
	a := &Agent{cfg: cfg, o: o, log: log, creds: creds, pressure: pressure{}, kick: make(chan struct{}, 1)}
	a.certs.set(tc)
	o.Metrics.setCertExpiry(tc.Leaf.NotAfter)
	a.cli, err = newAPIClient(clientOptions{
		Servers:    cfg.Servers,
		CAs:        pool,
		ClientCert: a.certs.get,
		UserAgent:  "anvil-agent (" + cfg.NodeName + ")",
		Log:        log,
		OnFailover: func(string, string) { o.Metrics.failover(); a.forceStatus.Store(true) },
	})
	if err != nil {
		return nil, err
	}
	learned, err := readLearnedServers(a.learnedServersPath())
	if err != nil {
		log.Warn("ignoring the apiservers an earlier run learned", "err", err)
	}
	a.setLearned(learned)
	a.facts = o.Facts
	if a.facts == nil {
		fo := FactsOptions{NodeIP: cfg.NodeIP, StoragePath: cfg.EphemeralStoragePath, RuntimeSockets: cfg.ContainerRuntimeEndpoints}
		a.facts = func() (Facts, error) { return GatherFacts(fo) }
	}
	a.tick.Store(time.Now().UnixNano())
	return a, nil
}

// Run registers the Node and keeps its heartbeat until ctx ends. It never
// returns on an apiserver error: it retries with backoff, failing over
// across the configured servers.
func (a *Agent) Run(ctx context.Context) error {
	defer a.cli.close()
	if err := a.registerLoop(ctx); err != nil {
		return nil // ctx ended before registration
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.leaseLoop(ctx) })
	wg.Go(func() { a.statusLoop(ctx) })
	wg.Go(func() { a.learnLoop(ctx) })
	if a.cfg.RotateCertificates == nil || *a.cfg.RotateCertificates {
		wg.Go(func() { a.rotationLoop(ctx) })
	}
	wg.Wait()
	a.log.Info("agent stopped")
	return nil
}

// Healthy reports whether the agent's loops are alive (not whether the
// apiserver answers: an outage is waited out, not a reason to restart).
func (a *Agent) Healthy() bool {
	limit := 3*a.cfg.RenewInterval + 30*time.Second
	return time.Since(time.Unix(0, a.tick.Load())) < limit
}

// Registered reports whether the Node has been registered.
func (a *Agent) Registered() bool { return a.registered.Load() }

// LastRenew is when the Lease was last renewed (zero before).
func (a *Agent) LastRenew() time.Time {
	n := a.lastRenew.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Server is the apiserver the agent talks to now.
func (a *Agent) Server() string { return a.cli.server() }

func (a *Agent) beat() { a.tick.Store(time.Now().UnixNano()) }

func (a *Agent) registerLoop(ctx context.Context) error {
	bo := newBackoff(500*time.Millisecond, 30*time.Second)
	for {
		a.beat()
		err := a.register(ctx)
		if err == nil {
			a.registered.Store(true)
			a.o.Metrics.setRegistered()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log.Warn("node registration failed; retrying", "server", a.cli.server(), "err", err)
		if !sleep(ctx, bo.next()) {
			return ctx.Err()
		}
	}
}

// register creates the Node with its labels, taints and status, as the
// kubelet does; if it exists, it reconciles the agent's own labels and
// annotations and leaves taints alone (NodeRestriction forbids a node to
// change them; the missing ones are reported).
func (a *Agent) register(ctx context.Context) error {
	f, err := a.facts()
	if err != nil {
		return fmt.Errorf("gather facts: %w", err)
	}
	now := time.Now()
	a.mu.Lock()
	st := buildStatus(statusInput{cfg: a.cfg, facts: &f, pressure: a.pressure, now: now})
	a.mu.Unlock()
	n := newNode(a.cfg, &f, st)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got corev1.Node
	err = a.cli.do(rctx, "POST", nodesPath, "", protoBody{n, "v1", "Node"}, &got)
	switch {
	case err == nil:
		a.log.Info("node registered", "server", a.cli.server(), "taints", taintKeys(n.Spec.Taints))
		a.setNode(&got, &st, now)
		return nil
	case !isAlreadyExists(err):
		return fmt.Errorf("create node %s: %w", a.cfg.NodeName, err)
	}
	if err := a.cli.do(rctx, "GET", nodesPath+"/"+a.cfg.NodeName, "", nil, &got); err != nil {
		return fmt.Errorf("read node %s: %w", a.cfg.NodeName, err)
	}
	if missing := missingTaints(&got, n.Spec.Taints); len(missing) > 0 {
		a.log.Warn("the Node lacks taints the agent registers with; a node may not add taints to itself, an administrator must (kubectl taint nodes)",
			"missing", taintKeys(missing))
	}
	if err := a.patchMetadata(rctx, &got, &f); err != nil {
		return err
	}
	a.log.Info("node already registered", "server", a.cli.server())
	a.setNode(&got, nil, time.Time{})
	// Its status is the previous run's, maybe marked Unknown since.
	a.forceStatus.Store(true)
	return nil
}

func (a *Agent) patchMetadata(ctx context.Context, n *corev1.Node, f *Facts) error {
	body, err := metadataPatch(n, ownLabels(a.cfg), ownAnnotations(f))
	if err != nil || body == nil {
		return err
	}
	var got corev1.Node
	if err := a.cli.do(ctx, "PATCH", nodesPath+"/"+a.cfg.NodeName, contentMergePatch, body, &got); err != nil {
		return fmt.Errorf("update the labels of node %s: %w", a.cfg.NodeName, err)
	}
	*n = got
	return nil
}

func (a *Agent) setNode(n *corev1.Node, sent *corev1.NodeStatus, at time.Time) {
	n.ManagedFields = nil
	a.mu.Lock()
	defer a.mu.Unlock()
	first := a.node == nil
	a.node = n
	if sent != nil {
		a.lastSent, a.lastReport = sent, at
	}
	if first {
		// Start the periodic report and verification at a random point of
		// their interval: a fleet that registered together (a rack powered
		// on, a benchmark's ramp) would otherwise post 5-minute reports in
		// one wave for ever.
		now := time.Now()
		a.lastReport = now.Add(-time.Duration(randFloat() * float64(a.cfg.StatusReportInterval)))
		a.verifyAt = now.Add(jitter(a.verifyInterval()))
	}
}

// verifyInterval is how often the Node is read back to catch a Ready the
// node lifecycle controller overwrote while the Lease was being renewed
// (rare: a controller-manager that lost its watch). Outages the agent sees
// itself (failed renewals, a restart) force a post at once instead.
func (a *Agent) verifyInterval() time.Duration { return a.cfg.StatusReportInterval / 2 }

// leaseLoop renews the Lease every RenewInterval, stretched by up to 4% as
// the kubelet does. A failed renewal is retried with a jittered backoff
// well inside the lease duration, and forces the next status post.
//
// Renewals keep their phase: the next one is due an interval after the
// previous one was due, not after it finished. When the apiserver stalls
// for a moment, every agent waiting on it finishes at the same instant; if
// each then waited a full interval from there, they would all renew
// together from then on, the bursts would stall the apiserver again, and
// the fleet would lock into step (measured: p99 0.4–1 s at 1000 nodes,
// stalls every ~10 s).
func (a *Agent) leaseLoop(ctx context.Context) {
	bo := newBackoff(200*time.Millisecond, min(7*time.Second, a.cfg.RenewInterval))
	failures := 0
	due := time.Now()
	for {
		a.beat()
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, a.cfg.RenewInterval)
		err := a.renew(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		d := time.Since(start)
		a.o.Metrics.observeRenew(d, err)
		if a.o.OnRenew != nil {
			a.o.OnRenew(d, err)
		}
		var wait time.Duration
		if err != nil {
			a.forceStatus.Store(true)
			wait = bo.next()
			failures++
			a.log.Warn("lease renewal failed; retrying", "server", a.cli.server(), "in", wait.Round(time.Millisecond), "failures", failures, "err", err)
			// After an outage, a new phase: the retry's.
			due = time.Now().Add(wait)
		} else {
			if failures > 0 {
				a.log.Info("lease renewed again", "server", a.cli.server(), "after", failures)
				select {
				case a.kick <- struct{}{}:
				default:
				}
				due = start
			}
			failures = 0
			bo.reset()
			a.lastRenew.Store(time.Now().UnixNano())
			due = due.Add(spread(a.cfg.RenewInterval, 0.04))
			if late := time.Since(due); late > a.cfg.RenewInterval {
				// Far behind (a machine that slept): start afresh.
				due = time.Now()
			}
			wait = time.Until(due)
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// renew updates the Lease from the last copy the server returned (one
// PUT); it reads or creates the Lease only when it has none or the copy
// went stale.
func (a *Agent) renew(ctx context.Context) error {
	a.mu.Lock()
	cur, node := a.lease, a.node
	a.mu.Unlock()
	path := leasePath + "/" + a.cfg.NodeName
	if cur == nil {
		var got coordinationv1.Lease
		err := a.cli.do(ctx, "GET", path, "", nil, &got)
		switch {
		case isNotFound(err):
			l := a.newLease(node)
			if err := a.cli.do(ctx, "POST", leasePath, "", leaseBody(l), &got); err != nil && !isAlreadyExists(err) {
				return fmt.Errorf("create lease: %w", err)
			} else if err != nil {
				return a.forgetLease(err)
			}
			a.keepLease(&got)
			return nil
		case err != nil:
			return fmt.Errorf("read lease: %w", err)
		}
		cur = &got
	}
	l := cur.DeepCopy()
	a.fillLease(l, node)
	var got coordinationv1.Lease
	if err := a.cli.do(ctx, "PUT", path, "", leaseBody(l), &got); err != nil {
		if isConflict(err) || isNotFound(err) {
			return a.forgetLease(err)
		}
		return fmt.Errorf("renew lease: %w", err)
	}
	a.keepLease(&got)
	return nil
}

// leaseBody is a Lease as the body of a request, in protobuf as the
// kubelet sends it.
func leaseBody(l *coordinationv1.Lease) protoBody {
	return protoBody{l, "coordination.k8s.io/v1", "Lease"}
}

func (a *Agent) forgetLease(err error) error {
	a.mu.Lock()
	a.lease = nil
	a.mu.Unlock()
	return fmt.Errorf("renew lease: %w", err)
}

func (a *Agent) keepLease(l *coordinationv1.Lease) {
	l.ManagedFields = nil
	a.mu.Lock()
	a.lease = l
	a.mu.Unlock()
}

func (a *Agent) newLease(node *corev1.Node) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: corev1.NamespaceNodeLease},
	}
	a.fillLease(l, node)
	return l
}

// fillLease sets what the node lifecycle controller reads: holder, duration,
// renew time; and owns the Lease by the Node, so deleting the Node deletes
// its Lease (as the kubelet does).
func (a *Agent) fillLease(l *coordinationv1.Lease, node *corev1.Node) {
	holder := a.cfg.NodeName
	secs := int32(a.cfg.LeaseDuration / time.Second)
	l.TypeMeta = metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"}
	l.Spec.HolderIdentity = &holder
	l.Spec.LeaseDurationSeconds = &secs
	now := metav1.NewMicroTime(time.Now())
	l.Spec.RenewTime = &now
	if node != nil && node.UID != "" && len(l.OwnerReferences) == 0 {
		l.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
		}}
	}
}

// statusLoop computes the status every StatusUpdateInterval and posts it
// when it changed, when forced, or when StatusReportInterval has passed
// since the last post. After any failure, and every half report interval,
// it reads the Node back first, so a Ready the node lifecycle controller
// overwrote with Unknown is put back.
func (a *Agent) statusLoop(ctx context.Context) {
	// Start at a random point of the interval, so agents that started
	// together do not post together.
	if !sleep(ctx, jitter(a.cfg.StatusUpdateInterval)) {
		return
	}
	for {
		a.beat()
		rctx, cancel := context.WithTimeout(ctx, a.cfg.StatusUpdateInterval)
		err := a.syncStatus(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.forceStatus.Store(true)
			a.log.Warn("node status update failed; retrying", "server", a.cli.server(), "err", err)
		}
		t := time.NewTimer(spread(a.cfg.StatusUpdateInterval, 0.04))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

func (a *Agent) syncStatus(ctx context.Context) error {
	f, err := a.facts()
	if err != nil {
		return fmt.Errorf("gather facts: %w", err)
	}
	now := time.Now()
	force := a.forceStatus.Load()
	a.mu.Lock()
	verify := now.After(a.verifyAt)
	a.mu.Unlock()
	if verify || force {
		var got corev1.Node
		opts := "?resourceVersion=0" // the apiserver's cache is enough
		if err := a.cli.do(ctx, "GET", nodesPath+"/"+a.cfg.NodeName+opts, "", nil, &got); err != nil {
			if isNotFound(err) {
				// Deleted by an administrator: register again.
				a.log.Warn("the Node was deleted; registering it again")
				return a.register(ctx)
			}
			return fmt.Errorf("read node: %w", err)
		}
		if err := a.patchMetadata(ctx, &got, &f); err != nil {
			return err
		}
		if !serverReady(&got) {
			force = true
		}
		a.setNode(&got, nil, time.Time{})
		a.mu.Lock()
		a.verifyAt = now.Add(spread(a.verifyInterval(), 0.1))
		a.mu.Unlock()
	}
	a.mu.Lock()
	prev, lastSent, lastReport := a.node, a.lastSent, a.lastReport
	st := buildStatus(statusInput{cfg: a.cfg, facts: &f, prev: prev, pressure: a.pressure, now: now})
	a.mu.Unlock()
	reason := "forced"
	switch {
	case force:
	case !sameStatus(&st, lastSent):
		reason = "changed"
	case now.Sub(lastReport) >= a.cfg.StatusReportInterval:
		reason = "report interval"
	default:
		return nil
	}
	body, err := statusPatch(st, prev)
	if err != nil {
		return err
	}
	var got corev1.Node
	err = a.cli.do(ctx, "PATCH", nodesPath+"/"+a.cfg.NodeName+"/status", contentStrategicPatch, body, &got)
	a.o.Metrics.observeStatus(err)
	if err != nil {
		return fmt.Errorf("patch node status: %w", err)
	}
	a.setNode(&got, &st, now)
	a.forceStatus.Store(false)
	level := slog.LevelDebug
	if force {
		level = slog.LevelInfo
	}
	a.log.Log(ctx, level, "node status posted", "reason", reason, "ready", serverReady(&got))
	return nil
}

// rotationLoop renews the client certificate through a CSR when 70–90% of
// its life has passed (the kubelet's rule), retrying with backoff; the new
// certificate is used by the next connection and written to the
// kubeconfig, so a restart keeps it.
func (a *Agent) rotationLoop(ctx context.Context) {
	bo := newBackoff(5*time.Second, 5*time.Minute)
	for {
		leaf := a.certs.get().Leaf
		deadline := rotationDeadline(leaf.NotBefore, leaf.NotAfter)
		for wait := time.Until(deadline); wait > 0; wait = time.Until(deadline) {
			// Wake at least hourly: the clock may jump, a machine may sleep.
			if !sleep(ctx, min(wait, time.Hour)) {
				return
			}
		}
		for {
			err := a.RotateCertificate(ctx)
			if err == nil {
				bo.reset()
				break
			}
			if ctx.Err() != nil {
				return
			}
			d := bo.next()
			a.log.Error("client certificate renewal failed; retrying", "in", d.Round(time.Second), "expires", leaf.NotAfter, "err", err)
			if !sleep(ctx, d) {
				return
			}
		}
	}
}

// rotationDeadline is a random point between 70% and 90% of a
// certificate's life.
func rotationDeadline(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	return notBefore.Add(time.Duration(float64(life) * (0.7 + 0.2*randFloat())))
}

// RotateCertificate renews the client certificate now: a new key, a CSR
// made with the current certificate (the controller-manager approves a
// node's own renewal), the kubeconfig rewritten, the new certificate
// used from the next connection on.
func (a *Agent) RotateCertificate(ctx context.Context) error {
	key, err := pki.NewKey("")
	if err != nil {
		return err
	}
	certPEM, err := requestNodeCertificate(ctx, a.cli, csrRequest{NodeName: a.cfg.NodeName, Key: key, Wait: 5 * time.Minute, Log: a.log})
	a.o.Metrics.observeRotation(err)
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	creds := a.creds
	creds.CertPEM, creds.KeyPEM = certPEM, keyPEM
	tc, err := creds.cert()
	if err != nil {
		return err
	}
	if a.o.Credentials == nil {
		if err := writeKubeconfig(a.cfg.Kubeconfig, a.cfg.NodeName, creds); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.creds = creds
	a.mu.Unlock()
	a.certs.set(tc)
	a.o.Metrics.setCertExpiry(tc.Leaf.NotAfter)
	a.cli.close()
	a.log.Info("client certificate renewed", "expires", tc.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// ClientCertificate is the client certificate in use.
func (a *Agent) ClientCertificate() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creds.CertPEM
}

func taintKeys(ts []corev1.Taint) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Key+":"+string(t.Effect))
	}
	return out
}
