package approver

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	certlisters "k8s.io/client-go/listers/certificates/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// controller feeds Decide from informers on CSRs and Nodes and writes its
// verdicts. One worker: CSRs come a few per node joined, and one worker
// never races itself on a CSR.
type controller struct {
	cs    kubernetes.Interface
	o     Options
	log   *slog.Logger
	csrs  certlisters.CertificateSigningRequestLister
	nodes corelisters.NodeLister
	queue workqueue.TypedRateLimitingInterface[string]
}

// run decides CSRs until ctx is done, then returns nil; an error only when
// it cannot start.
func (c *controller) run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(c.cs, 0)
	csrInformer := factory.Certificates().V1().CertificateSigningRequests()
	nodeInformer := factory.Core().V1().Nodes()
	c.csrs, c.nodes = csrInformer.Lister(), nodeInformer.Lister()
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](c.o.RetryBase, c.o.RetryMax),
		workqueue.TypedRateLimitingQueueConfig[string]{})
	defer c.queue.ShutDown()

	if _, err := csrInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
	}); err != nil {
		return fmt.Errorf("watch CSRs: %w", err)
	}
	if _, err := nodeInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.nodeChanged,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := obj.(*corev1.Node)
			if ok1 && ok2 && !reflect.DeepEqual(o.Status.Addresses, n.Status.Addresses) {
				c.nodeChanged(obj)
			}
		},
	}); err != nil {
		return fmt.Errorf("watch Nodes: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), csrInformer.Informer().HasSynced, nodeInformer.Informer().HasSynced) {
		return nil // ctx is done
	}
	c.log.Info("watching CSRs", "synced", len(c.csrList()))

	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for c.next(ctx) {
	}
	return nil
}

func (c *controller) enqueue(obj any) {
	if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && decided(csr) == "" {
		c.queue.Add(csr.Name)
	}
}

// nodeChanged looks again at the undecided CSRs of a Node that appeared or
// whose addresses changed: a serving CSR waiting for them is decidable now,
// even after its retries ran out.
func (c *controller) nodeChanged(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	for _, csr := range c.csrList() {
		if csr.Spec.Username == NodeUserPrefix+n.Name && decided(csr) == "" {
			c.queue.Add(csr.Name)
		}
	}
}

func (c *controller) csrList() []*certificatesv1.CertificateSigningRequest {
	list, _ := c.csrs.List(labels.Everything()) // a lister's List does not fail
	return list
}

// next handles one CSR; false once the queue is shut down.
func (c *controller) next(ctx context.Context) bool {
	name, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(name)
	pending, err := c.sync(ctx, name)
	switch {
	case apierrors.IsConflict(err):
		// Decided or changed meanwhile, most often by the
		// controller-manager approving a renewal first.
		c.log.Debug("CSR changed since it was read; looking again", "csr", name)
		c.queue.AddRateLimited(name)
	case err != nil && ctx.Err() == nil:
		c.log.Warn("CSR not decided; retrying", "csr", name, "err", err)
		c.queue.AddRateLimited(name)
	case pending && c.queue.NumRequeues(name) < c.o.PendingRetries:
		c.queue.AddRateLimited(name)
	case pending:
		c.log.Info("CSR still pending; looking again when its Node appears or changes", "csr", name, "tries", c.queue.NumRequeues(name)+1)
		c.queue.Forget(name)
	default:
		c.queue.Forget(name)
	}
	return true
}

// sync decides CSR name and writes the verdict; pending says to look
// again later.
func (c *controller) sync(ctx context.Context, name string) (pending bool, err error) {
	csr, err := c.csrs.Get(name)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read CSR %s: %w", name, err)
	}
	verdict, reason := Decide(csr, Facts{Node: c.lookupNode(ctx), OwnBootstrapApproval: c.o.OwnBootstrapApproval})
	log := c.log.With("csr", name, "signer", csr.Spec.SignerName, "requester", csr.Spec.Username, "verdict", verdict.String(), "reason", reason)
	switch verdict {
	case Skip:
		log.Debug("CSR not the approver's")
		return false, nil
	case Pending:
		if c.queue.NumRequeues(name) == 0 {
			log.Info("CSR left pending")
		}
		return true, nil
	}
	if err := c.write(ctx, csr, verdict, reason); err != nil {
		return false, err
	}
	log.Info("CSR decided")
	return false, nil
}

// lookupNode reads Nodes from the informer's cache, and asks the apiserver
// before concluding that a Node does not exist: the cache may not have
// seen a Node registered a moment ago, and for a bootstrap CSR "no such
// Node" is what approves it.
func (c *controller) lookupNode(ctx context.Context) func(string) (*corev1.Node, error) {
	return func(name string) (*corev1.Node, error) {
		n, err := c.nodes.Get(name)
		if err == nil {
			return n, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
		n, err = c.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil, nil
		case err != nil:
			return nil, err
		}
		return n, nil
	}
}

// write records the verdict as the CSR's condition. The update carries the
// resourceVersion the verdict was made on: if anyone decided the CSR in
// between, it fails with a conflict and the CSR is looked at again (and
// then skipped), so a CSR is never decided twice.
func (c *controller) write(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, v Verdict, reason string) error {
	cond := certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: ApprovedReason,
		Message: reason, LastUpdateTime: metav1.Now(),
	}
	if v == Deny {
		cond.Type, cond.Reason = certificatesv1.CertificateDenied, DeniedReason
	}
	csr = csr.DeepCopy()
	csr.Status.Conditions = append(csr.Status.Conditions, cond)
	_, err := c.cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{FieldManager: LeaseName})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s CSR %s (%s): %w", v, csr.Name, reason, err)
	}
	return nil
}
