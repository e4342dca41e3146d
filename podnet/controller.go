package podnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"anvil.dev/anvil/internal/backoff"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// Defaults of Config.
const (
	DefaultResync     = 5 * time.Minute
	defaultRetryBase  = time.Second
	defaultRetryMax   = time.Minute
	defaultProcSysDir = "/proc/sys"
	// passBurst is how many passes may follow one another at once.
	passBurst = 20
)

// Config is what a node's pod network needs to know.
type Config struct {
	// NodeName is this node's Node.
	NodeName string
	// Interface is the node's own interface, the one its InternalIP is
	// on: routes to the other nodes' pods leave through it.
	Interface string
	// ClusterPodCIDRs are the cluster's pod CIDRs (networking.podCIDR),
	// at most one per IP family. Only Node pod ranges inside them are
	// routed, and pod traffic leaving them is masqueraded.
	ClusterPodCIDRs []netip.Prefix
	// ServiceCIDRs are the cluster's Service CIDRs (networking.serviceCIDR).
	// A node with no route covering one (no default route: an isolated
	// or air-gapped network) gets a route to it through Interface, so
	// that the host itself reaches ClusterIPs: the apiserver calling
	// admission webhooks and aggregated APIs, host-network pods.
	// kube-proxy rewrites the destination after that first route lookup,
	// which without a route fails with "network is unreachable".
	ServiceCIDRs []netip.Prefix
	// Client reads Nodes (list and watch; the system:node role allows
	// it), and lists and deletes the node's own pods when its pod range
	// changed (the Node authorizer and NodeRestriction allow that for
	// pods bound to the node).
	Client kubernetes.Interface
	// Root prefixes the CNI config's path (tests, packaging).
	Root hostfs.Root
	// MTU of the pods' interfaces; 0 takes the interface's.
	MTU int
	// NetNS is the path of the network namespace to run the pod network
	// of ("" = the agent's own, the normal case).
	NetNS string
	// Resync is how often everything is checked again although nothing
	// was heard: a route or the nftables table someone removed is put
	// back within it. 0 means DefaultResync.
	Resync time.Duration
	// Log gets what the controller does and why it waits; it adds
	// component=podnet and node=NodeName, so pass one without a node.
	Log *slog.Logger

	// procSys is /proc/sys, replaced by tests.
	procSys string
	// retryBase and retryMax bound the backoff between passes while
	// something waits or fails.
	retryBase, retryMax time.Duration
}

// Status is a snapshot of the node's pod network, for the agent's status
// and metrics.
type Status struct {
	// PodCIDRs are the node's own pod ranges, empty while it waits for
	// them (then Waiting names the node itself).
	PodCIDRs []netip.Prefix
	// CNIConfig is the path of the config list once written.
	CNIConfig string
	// Forwarding and Masquerade say the sysctls and the nftables table
	// are in place.
	Forwarding bool
	Masquerade bool
	// Routes are the routes programmed, by pod CIDR.
	Routes []Route
	// ServiceRoutes are the Service CIDRs routed through the node's
	// interface because no other route covers them (Config.ServiceCIDRs).
	ServiceRoutes []netip.Prefix
	// Waiting are the Nodes without a route (or the node itself without a
	// CNI config), each with the reason.
	Waiting []Waiting
	// Err is what went wrong in the last pass, nil when nothing did.
	Err error
	// Synced is when a pass last completed without error.
	Synced time.Time
}

// Controller programs and keeps a node's pod network; see the package
// documentation for its life cycle.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	trigger chan struct{}

	// podsChecked is the pod ranges for which no pod of the node was
	// left with an address of another; only Run's goroutine uses it.
	podsChecked []netip.Prefix

	mu     sync.Mutex
	status Status
	// said is the waiting reasons already logged, so a reason is logged
	// when it appears and again on backoff retries, not on every event.
	said map[string]string
}

// New checks cfg; it touches nothing.
func New(cfg Config) (*Controller, error) {
	var errs []error
	if cfg.NodeName == "" {
		errs = append(errs, errors.New("podnet: no node name"))
	}
	if cfg.Interface == "" {
		errs = append(errs, fmt.Errorf("podnet: node %s: no interface", cfg.NodeName))
	}
	if cfg.Client == nil {
		errs = append(errs, fmt.Errorf("podnet: node %s: no Kubernetes client", cfg.NodeName))
	}
	if len(cfg.ClusterPodCIDRs) == 0 {
		errs = append(errs, fmt.Errorf("podnet: node %s: no cluster pod CIDR", cfg.NodeName))
	}
	if _, err := masqueradeRuleset(cfg.ClusterPodCIDRs); err != nil {
		errs = append(errs, fmt.Errorf("podnet: node %s: %w", cfg.NodeName, err))
	}
	if cfg.MTU < 0 || cfg.MTU > 0 && cfg.MTU < 576 {
		errs = append(errs, fmt.Errorf("podnet: node %s: MTU %d is too small", cfg.NodeName, cfg.MTU))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.procSys == "" {
		cfg.procSys = defaultProcSysDir
	}
	if cfg.retryBase <= 0 {
		cfg.retryBase = defaultRetryBase
	}
	if cfg.retryMax <= 0 {
		cfg.retryMax = defaultRetryMax
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Controller{
		cfg:     cfg,
		log:     log.With("component", "podnet", "node", cfg.NodeName),
		trigger: make(chan struct{}, 1),
		said:    map[string]string{},
	}, nil
}

// Status returns a copy of the current status.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.PodCIDRs = slices.Clone(s.PodCIDRs)
	s.Routes = slices.Clone(s.Routes)
	s.Waiting = slices.Clone(s.Waiting)
	return s
}

// Run programs the pod network and keeps it until ctx ends; call it once.
// It returns an
// error only when it cannot start (no netlink); everything else — nft
// missing, a Node without a pod CIDR, the apiserver away — is retried with
// backoff and shown in Status and the log.
func (c *Controller) Run(ctx context.Context) error {
	h, err := netlinkHandle(c.cfg.NetNS)
	if err != nil {
		return fmt.Errorf("podnet: node %s: %w", c.cfg.NodeName, err)
	}
	defer h.Close()
	k := kernelRoutes{h: h}

	factory := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, c.cfg.Resync, informers.WithTransform(slimNode))
	nodes := factory.Core().V1().Nodes()
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.kick() },
		DeleteFunc: func(any) { c.kick() },
		UpdateFunc: func(old, cur any) {
			if relevantChange(old, cur) {
				c.kick()
			}
		},
	}); err != nil {
		return fmt.Errorf("podnet: node %s: watch Nodes: %w", c.cfg.NodeName, err)
	}
	lister := nodes.Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	c.mu.Lock()
	c.status = Status{Waiting: []Waiting{{Node: c.cfg.NodeName, Reason: "waiting for the first list of Nodes from the apiserver"}}}
	c.mu.Unlock()
	c.log.Info("waiting for the first list of Nodes from the apiserver")
	if !cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced) {
		return nil
	}

	var wg sync.WaitGroup
	kernel, stopKernel := context.WithCancel(ctx)
	wg.Go(func() { c.watchKernel(kernel) })
	defer wg.Wait()
	defer stopKernel()

	// Passes come at once on events, but a sustained stream of them (a
	// route manager that keeps deleting anvil's routes, each deletion
	// notified) is slowed to one a second instead of a busy loop.
	limit := rate.NewLimiter(rate.Every(time.Second), passBurst)
	bo := backoff.Backoff{Base: c.cfg.retryBase, Max: c.cfg.retryMax}
	throttled := false
	for {
		if limit.Tokens() < 1 && !throttled {
			throttled = true
			c.log.Warn("passes throttled to one a second: something keeps changing the routes, the interface or the Nodes")
		} else if limit.Tokens() >= passBurst/2 {
			throttled = false
		}
		if err := limit.Wait(ctx); err != nil {
			c.log.Info("pod network controller stopped")
			return nil
		}
		settled := c.pass(ctx, k, lister)
		var retry <-chan time.Time
		var timer *time.Timer
		if settled {
			bo.Reset()
		} else {
			timer = time.NewTimer(bo.Next())
			retry = timer.C
		}
		select {
		case <-ctx.Done():
		case <-c.trigger:
		case <-retry:
			c.mu.Lock()
			clear(c.said) // a retry says again why it still waits
			c.mu.Unlock()
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			c.log.Info("pod network controller stopped")
			return nil
		}
	}
}

func (c *Controller) kick() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// pass does everything once; it reports whether nothing waits or failed.
func (c *Controller) pass(ctx context.Context, k kernelRoutes, lister listersv1.NodeLister) bool {
	var errs []error
	st := Status{}

	changed, err := ensureForwarding(c.cfg.NetNS, c.cfg.procSys, c.cfg.ClusterPodCIDRs)
	if err != nil {
		errs = append(errs, err)
	} else {
		st.Forwarding = true
		for _, f := range changed {
			c.log.Info("IP forwarding enabled", "file", f)
		}
	}
	switch outcome, err := ensureMasquerade(ctx, c.cfg.NetNS, c.cfg.ClusterPodCIDRs); {
	case err != nil:
		errs = append(errs, err)
	default:
		st.Masquerade = true
		if outcome != fsutil.Unchanged {
			c.log.Info("masquerade table "+outcome.String(), "table", tableFamily+" "+MasqueradeTable, "cidrs", c.cfg.ClusterPodCIDRs)
		}
	}

	list, err := lister.List(labels.Everything())
	if err != nil {
		// Without the Nodes every route would look stale: touch none.
		errs = append(errs, fmt.Errorf("list Nodes: %w", err))
		st.Err = errors.Join(errs...)
		c.publish(st)
		return false
	}
	in := planInput{self: c.cfg.NodeName, cluster: c.cfg.ClusterPodCIDRs, iface: c.cfg.Interface, nodes: list}
	// Likewise without the interface and its subnets: then the routes
	// stay as they are, and nothing is said about next hops.
	link, err := k.h.LinkByName(c.cfg.Interface)
	ifOK := false
	if err != nil {
		link = nil
		errs = append(errs, fmt.Errorf("interface %s: %w", c.cfg.Interface, err))
	} else if in.ifAddrs, err = k.ifaceAddrs(link); err != nil {
		errs = append(errs, err)
	} else {
		ifOK = true
	}
	p := makePlan(in)

	// The node's own CNI config; its MTU is the interface's unless
	// configured, so it waits for the interface.
	switch {
	case p.ownWaiting != "":
		st.Waiting = append(st.Waiting, Waiting{Node: c.cfg.NodeName, Reason: p.ownWaiting + "; the CNI config cannot be written yet"})
	case link == nil && c.cfg.MTU == 0:
	default:
		if err := c.writeCNI(p.own, link); err != nil {
			errs = append(errs, err)
		} else {
			st.PodCIDRs = p.own
			st.CNIConfig = c.cfg.Root.Path(CNIConfigPath)
			// What a former range of the node left (moved.go): looked
			// for on every pass in the kernel, in the API once per range.
			if err := c.dropStaleBridgeAddrs(k, p.own); err != nil {
				errs = append(errs, err)
			}
			if !slices.Equal(c.podsChecked, p.own) {
				if err := c.deleteStrandedPods(ctx, p.own); err != nil {
					errs = append(errs, err)
				} else {
					c.podsChecked = slices.Clone(p.own)
				}
			}
		}
	}

	if ifOK {
		res, err := k.sync(link, p.routes, c.cfg.ServiceCIDRs)
		if err != nil {
			errs = append(errs, err)
		}
		for _, r := range res.added {
			if r.Node == "" {
				c.log.Info("service route added: no other route covers the Service CIDR", "route", r.PodCIDR, "dev", c.cfg.Interface)
				continue
			}
			c.log.Info("route added", "peer", r.Node, "route", r.PodCIDR, "via", r.Via)
		}
		for _, r := range res.replaced {
			c.log.Info("route replaced", "peer", r.Node, "route", r.PodCIDR, "via", r.Via)
		}
		for _, d := range res.removed {
			c.log.Info("route removed", "route", d)
		}
		for _, r := range res.programmed {
			if r.Node == "" {
				st.ServiceRoutes = append(st.ServiceRoutes, r.PodCIDR)
			} else {
				st.Routes = append(st.Routes, r)
			}
		}
		st.Waiting = append(st.Waiting, res.conflicts...)
		st.Waiting = append(st.Waiting, p.waiting...)
	}
	st.Err = errors.Join(errs...)
	if st.Err == nil {
		st.Synced = time.Now()
	}
	c.publish(st)
	return st.Err == nil && len(st.Waiting) == 0
}

func (c *Controller) writeCNI(own []netip.Prefix, link netlink.Link) error {
	mtu := c.cfg.MTU
	if mtu == 0 && link != nil {
		mtu = link.Attrs().MTU
	}
	data, err := CNIConfig(CNIInput{PodCIDRs: own, ClusterPodCIDRs: c.cfg.ClusterPodCIDRs, MTU: mtu})
	if err != nil {
		return fmt.Errorf("node %s: %w", c.cfg.NodeName, err)
	}
	outcome, err := WriteCNIConfig(c.cfg.Root, data)
	if err != nil {
		return err
	}
	if outcome != fsutil.Unchanged {
		c.log.Info("CNI config "+outcome.String(), "file", c.cfg.Root.Path(CNIConfigPath), "cidrs", own)
	}
	return nil
}

// publish stores st and logs what newly waits or failed.
func (c *Controller) publish(st Status) {
	c.mu.Lock()
	prevErr := c.status.Err
	c.status = st
	var say []Waiting
	now := map[string]string{}
	for _, w := range st.Waiting {
		now[w.Node] += w.Reason + "\n"
	}
	for _, w := range st.Waiting {
		if c.said[w.Node] != now[w.Node] {
			say = append(say, w)
		}
	}
	c.said = now
	c.mu.Unlock()
	for _, w := range say {
		if w.Node == c.cfg.NodeName {
			c.log.Warn("CNI config not written yet", "reason", w.Reason)
		} else {
			c.log.Warn("no route to the pods of a node yet", "peer", w.Node, "reason", w.Reason)
		}
	}
	switch {
	case st.Err != nil && (prevErr == nil || prevErr.Error() != st.Err.Error()):
		c.log.Warn("pod network incomplete; retrying", "err", st.Err)
	case st.Err == nil && prevErr != nil:
		c.log.Info("pod network in place", "routes", len(st.Routes))
	}
}

// slimNode keeps of a Node only what the pod network reads: a cluster of
// thousands of Nodes with their images and conditions would otherwise sit
// whole in every agent's memory.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	s := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			s.Status.Addresses = append(s.Status.Addresses, a)
		}
	}
	return s, nil
}

// relevantChange tells an update worth a pass: pod CIDRs or InternalIPs
// changed, or it is the informer's periodic resync (same version), which
// is what puts back a route someone removed.
func relevantChange(old, cur any) bool {
	o, ok1 := old.(*corev1.Node)
	n, ok2 := cur.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	return o.ResourceVersion == n.ResourceVersion ||
		o.Spec.PodCIDR != n.Spec.PodCIDR ||
		!slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs) ||
		!slices.Equal(o.Status.Addresses, n.Status.Addresses)
}
