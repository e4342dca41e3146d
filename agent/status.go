package agent

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"

	"anvil.dev/anvil/internal/backoff"
)

// Status posting: the Node's status, computed often, posted when it changed
// or when the report interval passed, and read back to undo an Unknown.

// statusLoop computes the status every StatusUpdateInterval and posts it
// when it changed, when forced, or when StatusReportInterval has passed
// since the last post. After any failure, and every half report interval,
// it reads the Node back first, so a Ready the node lifecycle controller
// overwrote with Unknown is put back.
func (a *Agent) statusLoop(ctx context.Context) {
	// Start at a random point of the interval, so agents that started
	// together do not post together.
	if !backoff.Sleep(ctx, backoff.Jitter(a.cfg.StatusUpdateInterval)) {
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
		t := time.NewTimer(backoff.Spread(a.cfg.StatusUpdateInterval, 0.04))
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
		a.verifyAt = now.Add(backoff.Spread(a.verifyInterval(), 0.1))
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
		a.lastReport = now.Add(-time.Duration(rand.Float64() * float64(a.cfg.StatusReportInterval)))
		a.verifyAt = now.Add(backoff.Jitter(a.verifyInterval()))
	}
}

// verifyInterval is how often the Node is read back to catch a Ready the
// node lifecycle controller overwrote while the Lease was being renewed
// (rare: a controller-manager that lost its watch). Outages the agent sees
// itself (failed renewals, a restart) force a post at once instead.
func (a *Agent) verifyInterval() time.Duration { return a.cfg.StatusReportInterval / 2 }
