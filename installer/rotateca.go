package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// `anvil cluster rotate-ca`: the three stages of a CA rotation (package pki
// describes them), each on every master one at a time, then on every
// worker, before the next stage begins anywhere. The first master makes the
// next CAs and uploads them sealed with a certificate key made here; the
// other masters fetch them with it (on stdin; never in argv). Between the
// trust and the reissue stages, the pods anvil deploys that talk to the API
// (CoreDNS) start again once kube-root-ca.crt holds the new CA. After each
// stage the workstation's admin kubeconfig is replaced by the primary's.

// RotateCAOptions are RotateCA's.
type RotateCAOptions struct {
	Options
	// Stages to run, in order; empty means all three.
	Stages []string
	// Kubeconfig is the workstation's admin kubeconfig to keep current;
	// empty means DefaultKubeconfigPath(ClusterFile) when it exists.
	Kubeconfig string
	// Timeout bounds each host's part of a stage.
	Timeout time.Duration
}

// RotateCAResult is what RotateCA did.
type RotateCAResult struct {
	Stages []string      `json:"stages"`
	Steps  []PlannedStep `json:"steps"`
	Took   time.Duration `json:"took"`
}

type rotateState struct {
	o   RotateCAOptions
	key master.CertificateKey
	// from is the first stage to run: where an earlier rotation stopped,
	// as the masters' PKI says (probe).
	from string
	// recorded is the stage the primary's record names.
	recorded string
	// states are the masters' (caNone, caNext, caReissued).
	states map[string]string
	mu     sync.Mutex
	// stopped is the stage a host failed in; later stages do nothing.
	stopped string
}

// Where a master's PKI stands, as probeCommand prints it.
const (
	caNone     = "none"     // one CA in ca.crt, no next CA
	caNext     = "next"     // a next CA here (prepared or trusted)
	caReissued = "reissued" // several CAs in ca.crt, no next CA
)

// probeCommand prints a master's CA rotation state.
var probeCommand = fmt.Sprintf("if [ -e %[1]s/%[2]s ]; then echo %[3]s; elif [ \"$(grep -c 'BEGIN CERTIFICATE' %[1]s/%[4]s)\" -gt 1 ]; then echo %[5]s; else echo %[6]s; fi",
	hostfs.PKIDir, pki.CertFile(pki.NextBaseName(pki.CACertAndKeyBaseName)), caNext, pki.CertFile(pki.CACertAndKeyBaseName), caReissued, caNone)

// resumeFrom is the stage a rotation resumes at given the masters'
// states, or "" to start a new one.
func resumeFrom(states map[string]string) string {
	var next, reissued int
	for _, st := range states {
		switch st {
		case caNext:
			next++
		case caReissued:
			reissued++
		}
	}
	switch {
	case next == 0 && reissued == 0:
		return ""
	case next > 0 && reissued > 0:
		return pki.RotateReissue
	case reissued > 0:
		return pki.RotateDrop
	default:
		return pki.RotateTrust
	}
}

func (rs *rotateState) stop(stage string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.stopped == "" {
		rs.stopped = stage
	}
}

// RotateCA rotates the cluster's CAs.
func RotateCA(ctx context.Context, o RotateCAOptions) (*RotateCAResult, error) {
	stages := o.Stages
	if len(stages) == 0 {
		stages = pki.RotateStages()
	}
	for i, s := range stages {
		j := slices.Index(pki.RotateStages(), s)
		if j < 0 {
			return nil, fmt.Errorf("unknown stage %q: use %s", s, strings.Join(pki.RotateStages(), ", "))
		}
		if i > 0 && j != slices.Index(pki.RotateStages(), stages[i-1])+1 {
			return nil, fmt.Errorf("stages run in the order %s, without gaps", strings.Join(pki.RotateStages(), ", "))
		}
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Kubeconfig == "" && o.ClusterFile != "" {
		if p := DefaultKubeconfigPath(o.ClusterFile); fileExists(p) {
			o.Kubeconfig = p
		}
	}
	r, err := newRun(o.Options)
	if err != nil {
		return nil, err
	}
	defer r.close()
	r.factsReq = factsRequest{version: r.cluster.KubernetesVersion, status: true}
	rs := &rotateState{o: o, states: map[string]string{}}
	if rs.key, err = master.NewCertificateKey(); err != nil {
		return nil, err
	}
	phases := []flowPhase{
		looking("connect", planConnect),
		looking("facts", planFacts),
		looking("validate", rs.planValidate),
	}
	for _, s := range stages {
		phases = append(phases,
			changing(s+"-masters", func(r *run) plan { return rs.planMasters(r, s) }),
			changing(s+"-workers", func(r *run) plan { return rs.planWorkers(r, s) }))
		if s == pki.RotateTrust {
			phases = append(phases, changing("restart-api-clients", rs.planRestartClients))
		}
	}
	if stages[len(stages)-1] == pki.RotateDrop {
		phases = append(phases, changing("finish", rs.planFinish))
	}
	start := time.Now()
	err = r.do(ctx, "rotate-ca", phases)
	return &RotateCAResult{Stages: stages, Steps: r.planned, Took: time.Since(start)}, err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// planValidate refuses to start with a master down: each stage must reach
// every master before the next begins, or a master would stop trusting
// what the others present.
func (rs *rotateState) planValidate(r *run) plan {
	var down []string
	for _, h := range r.hosts {
		if h.failed() || h.facts == nil || (h.IsMaster() && h.facts.Node == nil) {
			down = append(down, h.Name)
		}
	}
	r.primary = nil
	for _, h := range r.alive() {
		if h.IsMaster() && h.facts != nil && h.facts.ControlPlane() {
			r.primary = h
			break
		}
	}
	pl := plan{}
	for _, h := range r.alive() {
		pl.steps = append(pl.steps, step{host: h, check: true, do: "every host reachable and set up; where an earlier rotation stopped", run: func(ctx context.Context) (string, error) {
			switch {
			case len(down) > 0:
				return "", fmt.Errorf("%s cannot be reached or is not set up: a CA rotation must reach every machine at every stage, or one would stop trusting the others; bring it back (or remove it from the cluster file) first", strings.Join(down, ", "))
			case r.primary == nil:
				return "", errors.New("no master runs a control plane")
			case !h.IsMaster():
				return "ok", nil
			}
			out, err := h.client.OutputAsRoot(ctx, probeCommand)
			if err != nil {
				return "", fmt.Errorf("read the CA rotation state: %w", err)
			}
			st := strings.TrimSpace(string(out))
			var recorded string
			if h == r.primary {
				rec, _ := h.client.OutputAsRoot(ctx, "cat "+rotationRecord+" 2>/dev/null || true")
				recorded = strings.TrimSpace(string(rec))
				if recorded != "" && !slices.Contains(pki.RotateStages(), recorded) {
					return "", fmt.Errorf("%s names stage %q: remove it if no rotation is under way", rotationRecord, recorded)
				}
			}
			rs.mu.Lock()
			rs.states[h.Name] = st
			if recorded != "" {
				rs.recorded = recorded
			}
			rs.from = rs.recorded
			if rs.from == "" {
				rs.from = resumeFrom(rs.states)
			}
			rs.mu.Unlock()
			if recorded != "" {
				return "CA rotation state: " + st + "; an earlier run stopped in stage " + recorded, nil
			}
			return "CA rotation state: " + st, nil
		}})
	}
	return pl
}

// stageFailed marks a stage as failed, so no later stage runs.
func (rs *rotateState) blocked(r *run, stage string) error {
	for _, h := range r.hosts {
		if h.failed() {
			rs.stop(stage)
			return fmt.Errorf("%s failed: a CA rotation goes on only with every host (fix it and run anvil cluster rotate-ca again to resume)", h.Name)
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.stopped != "" {
		return fmt.Errorf("stage %s did not finish everywhere: nothing more is done (run anvil cluster rotate-ca again to resume; it starts where it stopped)", rs.stopped)
	}
	return nil
}

func (rs *rotateState) run(ctx context.Context, r *run, h *host, stage string, args []string, stdin string) (string, error) {
	if err := rs.blocked(r, stage); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, rs.o.Timeout)
	defer cancel()
	start := time.Now()
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	if err := r.runLogged(ctx, h, "anvil certs rotate-ca --stage "+stage, shellJoin(args), in, io.Discard); err != nil {
		rs.stop(stage)
		return "", err
	}
	return fmt.Sprintf("stage %s done in %s", stage, time.Since(start).Round(100*time.Millisecond)), nil
}

// done says whether stage finished on every master in an earlier
// rotation that stopped later (only when every stage was asked for).
func (rs *rotateState) done(stage string) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.o.Stages) == 0 && rs.from != "" && slices.Index(pki.RotateStages(), stage) < slices.Index(pki.RotateStages(), rs.from)
}

// doneSteps say that stage is done on hosts.
func doneSteps(hosts []*host, stage string) plan {
	var pl plan
	for _, h := range hosts {
		pl.steps = append(pl.steps, step{host: h, do: "nothing to do: stage " + stage + " was done everywhere by an earlier run"})
	}
	return pl
}

func (rs *rotateState) planMasters(r *run, stage string) plan {
	pl := plan{oneAtATime: true}
	masters := slices.DeleteFunc(r.alive(), func(h *host) bool { return !h.IsMaster() })
	if rs.done(stage) {
		return doneSteps(masters, stage)
	}
	// The primary first: it makes the next CAs.
	slices.SortStableFunc(masters, func(a, b *host) int {
		if a == r.primary {
			return -1
		}
		if b == r.primary {
			return 1
		}
		return 0
	})
	for _, h := range masters {
		args := []string{anvilOnHost, "certs", "rotate-ca", "--stage", stage}
		stdin, do := "", fmt.Sprintf("%s (restarts what reads a changed file, one component at a time)", shellJoin(args))
		if stage == pki.RotateTrust {
			args = append(args, "--certificate-key-file", "-")
			// The primary makes the next CAs, unless another master
			// holds them from an earlier run: then it fetches them too.
			rs.mu.Lock()
			prepare := h == r.primary && (rs.from == "" || rs.states[h.Name] == caNext)
			rs.mu.Unlock()
			if prepare {
				args = append(args, "--prepare")
			}
			stdin = rs.key.Reveal() + "\n"
			do = shellJoin(args) + " (the certificate key on stdin)"
			if prepare {
				do += ": makes the next CAs (or keeps those it has) and uploads them sealed"
			}
		}
		pl.steps = append(pl.steps, step{host: h, do: do, run: func(ctx context.Context) (string, error) {
			if h == r.primary {
				// Where to resume, should this run stop.
				if err := rs.blocked(r, stage); err != nil {
					return "", err
				}
				if _, err := h.client.OutputAsRoot(ctx, "printf '%s\\n' "+stage+" > "+rotationRecord); err != nil {
					rs.stop(stage)
					return "", fmt.Errorf("record the stage in %s: %w", rotationRecord, err)
				}
			}
			out, err := rs.run(ctx, r, h, stage, args, stdin)
			if err != nil || h != r.primary {
				return out, err
			}
			return out, rs.refreshKubeconfig(ctx, r, stage)
		}})
	}
	// The workstation's kubeconfig once every master is done.
	if len(masters) > 1 && rs.o.Kubeconfig != "" {
		last := masters[len(masters)-1]
		pl.steps = append(pl.steps, step{host: last, do: "replace " + rs.o.Kubeconfig + " with " + r.primary.Name + "'s admin kubeconfig", run: func(ctx context.Context) (string, error) {
			if err := rs.blocked(r, stage); err != nil {
				return "", err
			}
			return rs.o.Kubeconfig + " updated", rs.refreshKubeconfig(ctx, r, stage)
		}})
	}
	return pl
}

// refreshKubeconfig replaces the workstation's admin kubeconfig with the
// primary's, which trusts the stage's CA bundle (and, from the reissue
// stage on, holds a certificate of the new CA).
func (rs *rotateState) refreshKubeconfig(ctx context.Context, r *run, stage string) error {
	if rs.o.Kubeconfig == "" {
		return nil
	}
	b, err := r.primary.client.OutputAsRoot(ctx, "cat "+adminKubeconfigOnHost)
	if err != nil {
		rs.stop(stage)
		return fmt.Errorf("read %s on %s: %w", adminKubeconfigOnHost, r.primary.Name, err)
	}
	if _, err := fsutil.EnsureFile(rs.o.Kubeconfig, b, 0o600, 0o700); err != nil {
		rs.stop(stage)
		return fmt.Errorf("write kubeconfig %s: %w", rs.o.Kubeconfig, err)
	}
	return nil
}

// rotationRecord, on the primary, names the stage a rotation is in; it is
// removed when the rotation is finished. A run that stopped resumes there.
const rotationRecord = hostfs.StateDir + "/ca-rotation-stage"

// planFinish removes the record once every stage is done everywhere.
func (rs *rotateState) planFinish(r *run) plan {
	if r.primary == nil || r.primary.failed() {
		return plan{}
	}
	// The apiservers add the CAs they trust to
	// kube-system/extension-apiserver-authentication and never take one
	// out: deleted, it is made again from what they trust now, so the
	// components and aggregated servers that authenticate through it stop
	// trusting the old CAs too.
	kubectl := shellJoin([]string{kubectlOnHost, "--kubeconfig", adminKubeconfigOnHost, "-n", "kube-system"})
	recreate := kubectl + " delete configmap extension-apiserver-authentication --ignore-not-found && for i in $(seq 60); do " +
		kubectl + " get configmap extension-apiserver-authentication >/dev/null 2>&1 && exit 0; sleep 1; done; echo 'extension-apiserver-authentication was not made again within 60 s'; exit 1"
	return plan{steps: []step{{host: r.primary, do: "extension-apiserver-authentication made again without the old CAs; rm -f " + rotationRecord + " (the rotation is finished)", run: func(ctx context.Context) (string, error) {
		if err := rs.blocked(r, pki.RotateDrop); err != nil {
			return "", err
		}
		if err := r.runLogged(ctx, r.primary, "extension-apiserver-authentication", recreate, nil, io.Discard); err != nil {
			return "", err
		}
		if _, err := r.primary.client.OutputAsRoot(ctx, "rm -f "+rotationRecord); err != nil {
			return "", err
		}
		return "finished", nil
	}}}}
}

func (rs *rotateState) planWorkers(r *run, stage string) plan {
	var workers []*host
	for _, h := range r.alive() {
		// At the reissue stage the masters' kubelets too: their serving
		// certificates, asked for while some controller-manager still
		// signed with the old CA, are asked for again now that all sign
		// with the new one.
		if !h.IsMaster() || stage == pki.RotateReissue {
			workers = append(workers, h)
		}
	}
	if rs.done(stage) {
		return doneSteps(workers, stage)
	}
	pl := plan{concurrency: max(1, len(workers)/2)}
	for _, h := range workers {
		args := []string{anvilOnHost, "certs", "rotate-ca", "--stage", stage}
		do := shellJoin(args) + " (the CA bundle from cluster-info; restarts the kubelet, kube-proxy and the agent)"
		switch {
		case stage == pki.RotateReissue && h.IsMaster():
			do = shellJoin(args) + " again (done here already; the kubelet's serving certificate is asked for again if the old CA signed it)"
		case stage == pki.RotateReissue:
			do = shellJoin(args) + " (a node certificate from the new CA through a CSR; a new kubelet serving certificate)"
		}
		pl.steps = append(pl.steps, step{host: h, do: do, run: func(ctx context.Context) (string, error) {
			return rs.run(ctx, r, h, stage, args, "")
		}})
	}
	return pl
}

// planRestartClients restarts, once kube-root-ca.crt in kube-system holds
// every CA of the new bundle, the Deployments anvil runs whose pods talk
// to the API with the CA they read at start (CoreDNS).
func (rs *rotateState) planRestartClients(r *run) plan {
	if r.primary == nil || r.primary.failed() {
		return plan{}
	}
	if rs.done(pki.RotateTrust) {
		return doneSteps([]*host{r.primary}, pki.RotateTrust)
	}
	wait := fmt.Sprintf("b=$(cat %[1]s | tr -d '\\n'); for i in $(seq 120); do c=$(%[2]s --kubeconfig %[3]s -n kube-system get configmap kube-root-ca.crt -o jsonpath='{.data.ca\\.crt}' | tr -d '\\n'); case \"$c\" in *\"$b\"*) exit 0;; esac; sleep 1; done; echo 'kube-root-ca.crt does not hold the new CA bundle after 120 s'; exit 1",
		hostfs.PKIDir+"/"+pki.CertFile(pki.CACertAndKeyBaseName), kubectlOnHost, adminKubeconfigOnHost)
	kubectl := func(args ...string) string {
		return shellJoin(append([]string{kubectlOnHost, "--kubeconfig", adminKubeconfigOnHost, "-n", "kube-system"}, args...))
	}
	return plan{steps: []step{{host: r.primary, do: "wait until kube-root-ca.crt holds the new CA bundle, then restart CoreDNS (its pods read the CA at start) and wait for it", run: func(ctx context.Context) (string, error) {
		if err := rs.blocked(r, pki.RotateTrust); err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(ctx, rs.o.Timeout)
		defer cancel()
		if err := r.runLogged(ctx, r.primary, "wait for kube-root-ca.crt", wait, nil, io.Discard); err != nil {
			rs.stop(pki.RotateTrust)
			return "", err
		}
		out, err := r.primary.client.OutputAsRoot(ctx, kubectl("get", "deployment", "--ignore-not-found", "-o", "name", "coredns"))
		if err != nil {
			rs.stop(pki.RotateTrust)
			return "", err
		}
		if strings.TrimSpace(string(out)) == "" {
			return "no CoreDNS to restart", nil
		}
		for _, c := range []string{kubectl("rollout", "restart", "deployment/coredns"), kubectl("rollout", "status", "deployment/coredns", "--timeout", "5m")} {
			if err := r.runLogged(ctx, r.primary, "kubectl rollout", c, nil, io.Discard); err != nil {
				rs.stop(pki.RotateTrust)
				return "", err
			}
		}
		return "CoreDNS restarted with the new CA bundle", nil
	}}}}
}
