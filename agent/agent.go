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

	"anvil.dev/anvil/podnet"
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

// Agent is one node's agent. With runtime none it registers the Node,
// renews its Lease, posts its status and renews its client certificate;
// with runtime containerd it leaves the Node to the kubelet and runs
// runPods (see pods.go) instead. With runtime none, its life cycle:
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
	// podnet is the pod network, once it runs (runtime containerd).
	podnet atomic.Pointer[podnet.Controller]
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

// Run registers the Node and keeps its heartbeat until ctx ends; on a
// machine that runs pods it leaves the Node to the kubelet and runs the
// pod network and the image import instead (runPods). It never returns on
// an apiserver error: it retries with backoff, failing over across the
// configured servers.
func (a *Agent) Run(ctx context.Context) error {
	defer a.cli.close()
	if a.cfg.RunsPods() {
		a.runPods(ctx)
		a.log.Info("agent stopped")
		return nil
	}
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
