package installer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/sshx"
)

// agentUnitFile is the node agent's unit: a host with it registers a Node.
const agentUnitFile = hostfs.UnitDir + "/anvil-agent.service"

// Phase ready: wait until the Node of every host is Ready, as the cluster
// itself says (one shared Node list, read through the primary).

func planReady(r *run) plan {
	pl := plan{concurrency: len(r.hosts)}
	for _, h := range r.alive() {
		pl.steps = append(pl.steps, step{host: h, check: true, do: fmt.Sprintf("wait until Node %s is Ready", h.Name), run: func(ctx context.Context) (string, error) {
			if p := r.primary; p == nil || p.failed() {
				return "", errNoControlPlane(p)
			}
			return r.waitReady(ctx, h)
		}})
	}
	return pl
}

func (r *run) waitReady(ctx context.Context, h *host) (string, error) {
	// Only hosts running the node agent register a Node. Every host does
	// once init starts the agent on masters too; until then a master has
	// no Node to wait for, which is worth a warning, not a hang. The facts
	// say for a host this run did not init or join.
	agentUnit := h.facts.AgentUnit && h.facts.Member()
	if !agentUnit {
		err := h.client.RunAsRoot(ctx, "test -e "+agentUnitFile, nil, nil, nil)
		var exit *sshx.ExitError
		switch {
		case errors.As(err, &exit):
			h.task.Say("warning: no node agent here (%s is missing), so no Node to wait for", agentUnitFile)
			return "no node agent, no Node", nil
		case err != nil:
			return "", err
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.apply.o.Timeout)
	defer cancel()
	last := "no Node yet"
	for first := true; ; first = false {
		acc, err := r.access(ctx)
		if err == nil {
			var nodes map[string]nodeState
			nodes, err = acc.nodeStates(ctx)
			if n, ok := nodes[h.Name]; ok {
				if n.Ready && n.Starting == "" {
					if !first {
						// Waited for: a Node CoreDNS may not be spread
						// over yet (planAddons).
						r.apply.becameReady.Add(1)
					}
					return fmt.Sprintf("Ready after %s", time.Since(start).Round(100*time.Millisecond)), nil
				}
				last = "registered, not Ready: " + n.Reason
				if n.Ready {
					last = "Ready, still tainted " + n.Starting
				}
			}
		}
		if err != nil {
			last = err.Error()
		}
		h.task.Detail("%s", last)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("node %s not Ready after %s: %s", h.Name, time.Since(start).Round(time.Second), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
