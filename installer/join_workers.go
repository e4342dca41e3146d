package installer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/pki"
)

// Phase join-workers: `anvil join` on every worker that is not a node yet,
// in parallel, with one fresh, short-lived token made for this run and
// passed on the join's stdin.

func planJoinWorkers(r *run) plan {
	var pl plan
	need := false
	for _, h := range r.alive() {
		if h.IsMaster() {
			continue
		}
		if h.facts.Member() {
			pl.steps = append(pl.steps, step{host: h, do: "nothing to do: already a node"})
			continue
		}
		need = true
		do := fmt.Sprintf("anvil join %s --token-file - --ca-cert-hash <%s's CA> --node-name %s (the token on stdin)", r.cluster.APIServerURL(), primaryName(r), h.Name)
		if force(h) {
			do += " --force (an earlier join was interrupted)"
		}
		pl.steps = append(pl.steps, step{host: h, do: do, run: func(ctx context.Context) (string, error) {
			return r.joinWorker(ctx, h)
		}})
	}
	if need {
		p := r.primary
		if p == nil || p.failed() {
			// Every worker fails with the reason; the before step has no
			// host to run on.
			for i := range pl.steps {
				if pl.steps[i].run != nil {
					pl.steps[i].run = func(context.Context) (string, error) { return "", errNoControlPlane(p) }
				}
			}
			return pl
		}
		pl.before = []step{{host: p, do: fmt.Sprintf("make a join token valid for %s (anvil token create; read from its stdout)", r.apply.o.TokenTTL), run: func(ctx context.Context) (string, error) {
			t, err := r.createToken(ctx, "workers joined by anvil cluster apply")
			if err != nil {
				return "", err
			}
			r.apply.workerToken = t
			return "token " + t.String(), nil
		}}}
	}
	return pl
}

func (r *run) joinWorker(ctx context.Context, h *host) (string, error) {
	acc, err := r.access(ctx)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, r.apply.o.Timeout+time.Minute)
	defer cancel()
	args := r.workerJoinArgs(h, acc.caHash)
	start := time.Now()
	script, stdin := r.joinScript(h, args, workerJoined(), "", r.apply.workerToken.Reveal())
	if err := r.runLogged(ctx, h, "anvil join", script, stdin, io.Discard); err != nil {
		return "", err
	}
	return fmt.Sprintf("joined in %s", time.Since(start).Round(100*time.Millisecond)), nil
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
