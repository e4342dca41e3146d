package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/sshx"
)

// kubectlOnHost is the kubectl the upload links on every host.
const kubectlOnHost = hostfs.LinkDir + "/" + images.Kubectl

// Phase upgrade: the masters whose node state names another Kubernetes
// version than the cluster file (the upload phase has put the file's
// version beside the old one on every host) are switched to it with
// `anvil upgrade --to VERSION`, one at a time, each finished before the
// next begins: etcd healthy before and after on each, its components
// switched one at a time (master/upgrade.go). The first failure stops
// the roll; the masters not reached keep the old version, which runs as
// before. A re-run resumes: a switched master's state names the new
// version, and `anvil upgrade` skips what an interrupted run switched.
//
// The workers follow in the upgrade-workers phase.

func planUpgrade(r *run) plan {
	pl := plan{oneAtATime: true}
	to := r.cluster.KubernetesVersion
	var down []string
	for _, h := range r.hosts {
		if h.IsMaster() && h.failed() {
			down = append(down, h.Name)
		}
	}
	for _, h := range r.alive() {
		if !h.IsMaster() || h.facts == nil || h.facts.Node == nil {
			continue
		}
		if h.facts.Node.KubernetesVersion == to && h.facts.Node.UpgradingTo == "" {
			if why := r.anvilReplaced(h); why != "" {
				pl.steps = append(pl.steps, r.restartReplacedStep(h, why, down))
			}
			continue
		}
		from := h.facts.Node.KubernetesVersion
		if u := h.facts.Node.UpgradingTo; u != "" {
			from += " (an unfinished switch to " + u + ")"
		}
		args := r.upgradeArgs(r.apply.o.Rollback, down)
		pl.steps = append(pl.steps, step{host: h, do: fmt.Sprintf("Kubernetes %s → %s: %s (one master at a time; etcd healthy before and after)", from, to, shellJoin(args)), run: func(ctx context.Context) (string, error) {
			if err := r.refuseWithMastersDown(h, down); err != nil {
				return "", err
			}
			ctx, cancel := context.WithTimeout(ctx, r.apply.o.Timeout+5*time.Minute)
			defer cancel()
			start := time.Now()
			if err := r.runLogged(ctx, h, "anvil upgrade", shellJoin(args), nil, io.Discard); err != nil {
				return "", fmt.Errorf("%w (the masters not reached keep Kubernetes %s; apply again to resume, or set kubernetesVersion: %s and apply with --rollback to go back)", err, from, from)
			}
			r.apply.upgraded.Store(h.Name, true)
			return fmt.Sprintf("runs Kubernetes %s (%s → %s in %s)", to, from, to, time.Since(start).Round(100*time.Millisecond)), nil
		}})
	}
	return pl
}

// Phase upgrade-workers: once every master runs the file's version, the
// workers whose node stack runs another are switched, a bounded batch at
// a time (a quarter of them, at least one): each is cordoned and drained
// on the first master (kubectl drain: evictions, so PodDisruptionBudgets
// hold), switched (`anvil upgrade --to VERSION` on it: the kubelet and
// kube-proxy, then the agent), uncordoned, and Ready again with the new
// kubelet before its step ends. A failed worker stays cordoned, named,
// and the others go on.
func planUpgradeWorkers(r *run) plan {
	to := r.cluster.KubernetesVersion
	var workers []*host
	var restarts []step
	for _, h := range r.alive() {
		if h.IsMaster() || h.facts == nil || h.facts.NodeStack == nil {
			continue
		}
		if h.facts.NodeStack.KubernetesVersion == to && h.facts.NodeStack.UpgradingTo == "" {
			if why := r.anvilReplaced(h); why != "" {
				restarts = append(restarts, r.restartReplacedStep(h, why, nil))
			}
			continue
		}
		workers = append(workers, h)
	}
	pl := plan{concurrency: max(1, len(workers)/4), steps: restarts}
	if behind := r.mastersBehind(to); len(workers) > 0 && len(behind) > 0 {
		for _, h := range workers {
			pl.steps = append(pl.steps, step{host: h, do: fmt.Sprintf("nothing yet: master(s) %s do not run Kubernetes %s, and a kubelet is never newer than the control plane", strings.Join(behind, ", "), to)})
		}
		return pl
	}
	for _, h := range workers {
		from := h.facts.NodeStack.KubernetesVersion
		if u := h.facts.NodeStack.UpgradingTo; u != "" {
			from += " (an unfinished switch to " + u + ")"
		}
		args := r.upgradeArgs(r.apply.o.Rollback, nil)
		pl.steps = append(pl.steps, step{host: h, do: fmt.Sprintf("Kubernetes %s → %s: drain %s, %s, uncordon, wait until it is Ready with the new kubelet", from, to, h.Name, shellJoin(args)), run: func(ctx context.Context) (string, error) {
			if behind := r.mastersBehind(to); len(behind) > 0 {
				return "", fmt.Errorf("master(s) %s do not run Kubernetes %s: a kubelet must never be newer than the control plane; the masters first", strings.Join(behind, ", "), to)
			}
			if r.primary == nil || r.primary.failed() {
				return "", fmt.Errorf("no master to drain %s through", h.Name)
			}
			ctx, cancel := context.WithTimeout(ctx, r.apply.o.Timeout+5*time.Minute)
			defer cancel()
			start := time.Now()
			kubectl := func(what string, args ...string) error {
				cmd := shellJoin(append([]string{kubectlOnHost, "--kubeconfig", adminKubeconfigOnHost}, args...))
				return r.runLogged(ctx, r.primary, what, cmd, nil, io.Discard)
			}
			if err := kubectl("kubectl drain "+h.Name, "drain", h.Name, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout", r.apply.o.Timeout.String()); err != nil {
				return "", fmt.Errorf("%w (%s stays cordoned: kubectl uncordon %s when it should take pods again)", err, h.Name, h.Name)
			}
			if err := r.runLogged(ctx, h, "anvil upgrade", shellJoin(args), nil, io.Discard); err != nil {
				return "", fmt.Errorf("%w (%s stays cordoned; apply again to resume, or set kubernetesVersion: %s and apply with --rollback)", err, h.Name, from)
			}
			if err := kubectl("kubectl uncordon "+h.Name, "uncordon", h.Name); err != nil {
				return "", err
			}
			ready := fmt.Sprintf("for i in $(seq 180); do v=$(%s --kubeconfig %s get node %s -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.conditions[?(@.type==\"Ready\")].status}'); [ \"$v\" = %s ] && exit 0; sleep 1; done; echo \"$v\"; exit 1",
				kubectlOnHost, adminKubeconfigOnHost, h.Name, sshx.ShellQuote(to+" True"))
			if err := r.runLogged(ctx, r.primary, "wait until "+h.Name+" is Ready with kubelet "+to, ready, nil, io.Discard); err != nil {
				return "", err
			}
			return fmt.Sprintf("runs Kubernetes %s, Ready, uncordoned (%s → %s in %s)", to, from, to, time.Since(start).Round(100*time.Millisecond)), nil
		}})
	}
	return pl
}

// anvilReplaced says why h's anvil daemons are to be restarted: the upload
// phase replaces the anvil they run, or they still run one an earlier
// apply replaced (its status says so); "" when neither.
func (r *run) anvilReplaced(h *host) string {
	if st := h.facts.Status; st != nil && len(st.Replaced) > 0 {
		return strings.Join(st.Replaced, ", ") + " run a replaced binary"
	}
	if r.apply.bundle == nil {
		return ""
	}
	if sum, ok := h.facts.Installed[images.AnvilBinary]; ok && sum != r.apply.bundle.anvil.SHA256 {
		return "the upload replaces anvil"
	}
	return ""
}

// restartReplacedStep has `anvil upgrade` restart what on h runs a
// replaced anvil: the version already runs there, so that is all it does
// (master.Upgrade, agent.Upgrade). Masters take their turns, etcd healthy
// before and after; a worker's agent restarts without a drain, its pods
// untouched.
func (r *run) restartReplacedStep(h *host, why string, down []string) step {
	args := r.upgradeArgs(false, down)
	what := "the agent"
	if h.IsMaster() {
		what = "anvil's daemons (etcd and the agent last, one at a time)"
	}
	return step{host: h, do: fmt.Sprintf("restart %s, which run a replaced anvil (%s): %s", what, why, shellJoin(args)), run: func(ctx context.Context) (string, error) {
		if err := r.refuseWithMastersDown(h, down); err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(ctx, r.apply.o.Timeout+5*time.Minute)
		defer cancel()
		start := time.Now()
		var out strings.Builder
		if err := r.runLogged(ctx, h, "anvil upgrade", shellJoin(append(args, "-o", "json")), nil, &out); err != nil {
			return "", fmt.Errorf("%w (apply again to resume)", err)
		}
		var res struct {
			Restarted []string `json:"restarted"`
		}
		if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
			return "", fmt.Errorf("anvil upgrade on %s: its output: %w", h.Name, err)
		}
		if len(res.Restarted) == 0 {
			return "nothing ran a replaced binary", nil
		}
		return fmt.Sprintf("restarted %s in %s", strings.Join(res.Restarted, ", "), time.Since(start).Round(100*time.Millisecond)), nil
	}}
}

// upgradeArgs is the `anvil upgrade` a step runs with the file's version:
// --rollback when asked, --force when masters are down and the apply was
// told to go on regardless.
func (r *run) upgradeArgs(rollback bool, down []string) []string {
	to := r.cluster.KubernetesVersion
	args := []string{anvilOn(to), "upgrade", "--to", to}
	if rollback {
		args = append(args, "--rollback")
	}
	if r.apply.o.Force && len(down) > 0 {
		args = append(args, "--force")
	}
	return args
}

// refuseWithMastersDown refuses a step that restarts h's etcd member while
// the masters in down cannot be reached, unless --force.
func (r *run) refuseWithMastersDown(h *host, down []string) error {
	if len(down) == 0 || r.apply.o.Force {
		return nil
	}
	return fmt.Errorf("master(s) %s cannot be reached: restarting etcd on %s now would leave it one member short; bring them back first, or apply with --force to go on regardless", strings.Join(down, ", "), h.Name)
}

// mastersBehind are the masters not known to run version: failed, never
// a member, or at another version and not upgraded by this run.
func (r *run) mastersBehind(version string) []string {
	var out []string
	for _, h := range r.hosts {
		if !h.IsMaster() {
			continue
		}
		_, upgraded := r.apply.upgraded.Load(h.Name)
		if h.failed() || h.facts == nil || h.facts.Node == nil || (h.facts.Node.KubernetesVersion != version || h.facts.Node.UpgradingTo != "") && !upgraded {
			out = append(out, h.Name)
		}
	}
	return out
}
