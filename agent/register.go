package agent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"anvil.dev/anvil/internal/backoff"
)

// Registering the Node: create it as the kubelet would, or reconcile the
// agent's own labels and annotations on the one that exists.

func (a *Agent) registerLoop(ctx context.Context) error {
	bo := backoff.New(500*time.Millisecond, 30*time.Second)
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
		if !backoff.Sleep(ctx, bo.Next()) {
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

func taintKeys(ts []corev1.Taint) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Key+":"+string(t.Effect))
	}
	return out
}
