package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/pki"
)

// Phase join-workers: `anvil join` on every worker that is not a node yet,
// in parallel, each with a fresh, short-lived token of its own, bound to
// its name, passed on the join's stdin and deleted once the join is over
// (token.go).

func planJoinWorkers(r *run) plan {
	var pl plan
	for _, h := range r.alive() {
		if h.IsMaster() {
			continue
		}
		if h.facts.Member() {
			pl.steps = append(pl.steps, step{host: h, do: "nothing to do: already a node"})
			continue
		}
		do := fmt.Sprintf("anvil join %s --token-file - --ca-cert-hash <%s's CA> --node-name %s (on stdin a token valid for %s, for %s alone, deleted once the join is over)",
			r.cluster.APIServerURL(), primaryName(r), h.Name, r.apply.o.TokenTTL, h.Name)
		if force(h) {
			do += " --force (an earlier join was interrupted)"
		}
		run := func(ctx context.Context) (string, error) { return r.joinWorker(ctx, h) }
		if p := r.primary; p == nil || p.failed() {
			run = func(context.Context) (string, error) { return "", errNoControlPlane(p) }
		}
		pl.steps = append(pl.steps, step{host: h, do: do, run: run})
	}
	return pl
}

// ErrStaleNode means a worker's join failed while a Node of its name
// existed before the join started: what is left of the machine's earlier
// life (reset, reinstalled). A join token may not obtain an existing
// node's identity, so anvil's approver denies the join's CSR.
var ErrStaleNode = errors.New("its Node existed before the join (is the machine reset or reinstalled?), and a join token may not obtain an existing node's identity")

// joinWorker joins h with a token made for it alone, deleted once the
// join is over.
func (r *run) joinWorker(ctx context.Context, h *host) (string, error) {
	acc, err := r.access(ctx)
	if err != nil {
		return "", err
	}
	// Only a hint for a failure: a join an earlier apply abandoned may
	// complete meanwhile, and its Node is no stale one.
	_, nerr := acc.client.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
	res, err := r.withToken(ctx, h, "join of "+h.Name+" by anvil cluster apply", func(tok pki.Token) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, r.apply.o.Timeout+time.Minute)
		defer cancel()
		args := r.workerJoinArgs(h, acc.caHash)
		start := time.Now()
		script, stdin := r.joinScript(h, args, workerJoined(), "", tok.Reveal())
		if err := r.runLogged(ctx, h, "anvil join", script, stdin, io.Discard); err != nil {
			return "", err
		}
		return fmt.Sprintf("joined in %s", time.Since(start).Round(100*time.Millisecond)), nil
	})
	if err != nil && nerr == nil {
		return "", fmt.Errorf("%w (%w: delete it with kubectl delete node %s, and apply again)", err, ErrStaleNode, h.Name)
	}
	return res, err
}

// workerJoinArgs is the command line of a worker's `anvil join`, built
// here alone: the join token comes on its stdin. What the host's runtime
// asks of the join would be passed here, once `anvil join` takes it.
func (r *run) workerJoinArgs(h *host, caHash pki.CAHash) []string {
	flags := []string{"--token-file", "-"}
	if h.Runtime != "" {
		flags = append(flags, "--runtime", string(h.Runtime))
	}
	return r.joinArgs(h, caHash, flags...)
}

// joinArgs is `anvil join` of h, with flags (what to join as, where the
// secrets come from) before the ones every join has.
func (r *run) joinArgs(h *host, caHash pki.CAHash, flags ...string) []string {
	args := append([]string{anvilOn(r.apply.bundle.version), "join", r.cluster.APIServerURL()}, flags...)
	args = append(args, "--ca-cert-hash", caHash.String(), "--node-name", h.Name,
		"--node-ip", h.NodeAddress().String(), "--timeout", r.apply.o.Timeout.String())
	if force(h) {
		args = append(args, "--force")
	}
	return args
}

// shellJoin is args as one shell command line, each word quoted as it
// needs (values from the cluster file among them).
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = sshx.ShellQuote(a)
	}
	return strings.Join(q, " ")
}

// workerJoined and masterJoined are shell conditions that hold once a
// join completed: a worker's agent runs with its own credentials; a master
// recorded itself (its agent starts before the join is over).
func workerJoined() string {
	return fmt.Sprintf("[ -f %s ] && systemctl is-active -q anvil-agent.service", agent.KubeconfigFile)
}

func masterJoined() string { return "[ -f " + nodeStateFile + " ]" }

// joinScript is a join as it runs on h, and its stdin: under the apply
// lock, doing nothing when a join abandoned by an earlier apply (its SSH
// session died) completed meanwhile (joined holds), and running undo
// first when it is not empty. The secrets come first on stdin, one per
// line, read into shell variables and handed to the join on its stdin by
// printf, a shell builtin (no command line ever holds them); the
// operator's cluster file follows, for the join's -f (the host's labels,
// taints and layout, and the masters to fail over to).
func (r *run) joinScript(h *host, args []string, joined, undo string, secrets ...string) (string, io.Reader) {
	cf := path.Join(applyDir, "cluster.yaml")
	args = append(args, "-f", cf, "--node", h.Name)
	var reads, vars []string
	for i := range secrets {
		reads = append(reads, fmt.Sprintf("IFS= read -r s%d", i))
		vars = append(vars, fmt.Sprintf(`"$s%d"`, i))
	}
	script := locked(strings.Join([]string{
		"if " + joined + "; then cat >/dev/null; echo 'already joined (by an earlier apply)' >&2; exit 0; fi",
		"set -e",
		undo,
		"umask 077",
		"mkdir -p " + applyDir,
		strings.Join(reads, "; "),
		`trap 'rm -f ` + cf + `' EXIT`,
		"cat > " + cf,
		"set +e",
		fmt.Sprintf("printf '%s' %s | %s", strings.Repeat(`%s\n`, len(secrets)), strings.Join(vars, " "), shellJoin(args)),
	}, "\n"))
	in := strings.Join(secrets, "\n") + "\n"
	return script, io.MultiReader(strings.NewReader(in), bytes.NewReader(r.apply.clusterFile))
}
