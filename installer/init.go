package installer

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"strings"
	"time"
)

// Phase init: `anvil init` on the primary, unless it already is a control
// plane. The cluster file goes over stdin into a root-only file on tmpfs
// for init to read; init's stdout (which shows a join token) is dropped,
// and that token, which is bound to no node and which no join of the run
// uses, is deleted at once.

func planInit(r *run) plan {
	p := r.primary
	if p == nil || p.failed() {
		return plan{}
	}
	if p.facts.ControlPlane() {
		return plan{steps: []step{{host: p, do: fmt.Sprintf("nothing to do: the control plane runs here since %s", p.facts.Node.Initialized.Format(time.RFC3339))}}}
	}
	cmd := initCommand(r, p)
	do := "anvil init -f " + path.Join(applyDir, "cluster.yaml") + " --node " + p.Name
	if force(p) {
		do += " --force (an earlier init was interrupted: " + strings.Join(p.facts.Leftovers, ", ") + ")"
	}
	return plan{steps: []step{{host: p, do: do, run: func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, r.apply.o.Timeout+time.Minute)
		defer cancel()
		start := time.Now()
		// init's stdout shows the join token it made: kept in memory only,
		// to know which token to delete.
		var out strings.Builder
		err := r.runLogged(ctx, p, "anvil init", cmd, bytes.NewReader(r.apply.clusterFile), &out)
		t, made := findToken(out.String())
		if made {
			r.apply.made.addToken(t.ID())
			r.apply.handled(t.Reveal())
		}
		if err != nil {
			return "", err
		}
		res := fmt.Sprintf("control plane ready in %s", time.Since(start).Round(100*time.Millisecond))
		if made {
			if err := r.deleteToken(ctx, t.ID()); err != nil {
				r.log.Warn("init's token is left for the credentials phase", "host", p.Name, "err", err)
			} else {
				res += "; its join token deleted"
			}
		}
		return res, nil
	}}}}
}

// force is whether a node command must go over an interrupted run's
// leftovers. A master whose control-plane join stopped after it started
// its node agent counts as interrupted too: it is a node, not a master.
func force(h *host) bool {
	f := h.facts
	if h.IsMaster() {
		return !f.ControlPlane() && (len(f.Leftovers) > 0 || f.AgentJoined)
	}
	return !f.Member() && len(f.Leftovers) > 0
}

// initCommand is the script init runs in: under the apply lock, and a
// no-op when an init abandoned by an earlier apply finished meanwhile.
func initCommand(r *run, h *host) string {
	cf := path.Join(applyDir, "cluster.yaml")
	args := []string{anvilOn(r.apply.bundle.version), "init", "-f", cf, "--node", h.Name,
		"--timeout", r.apply.o.Timeout.String(), "--token-ttl", r.apply.o.TokenTTL.String()}
	if force(h) {
		args = append(args, "--force")
	}
	return locked(strings.Join([]string{
		"set -e",
		fmt.Sprintf("if [ -f %s ]; then cat >/dev/null; echo 'already initialised (by an earlier apply)' >&2; exit 0; fi", nodeStateFile),
		"umask 077",
		"mkdir -p " + applyDir,
		"cat > " + cf,
		`trap 'rm -f ` + cf + `' EXIT`,
		shellJoin(args),
	}, "\n"))
}
