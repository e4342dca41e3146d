package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/phase"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/internal/sshx"
)

// HostError is a failure on one host, in one phase.
type HostError struct {
	Host  string
	Phase string
	Err   error
}

func (e *HostError) Error() string { return fmt.Sprintf("%s: %s: %v", e.Host, e.Phase, e.Err) }
func (e *HostError) Unwrap() error { return e.Err }

// A flow's phases are phase.Phase[*run]: each first plans from what
// earlier phases found (never touching a host), then the plan's steps run
// on the hosts, so a dry run shows exactly what a real run would do.
type flowPhase = phase.Phase[*run]

// looking is a phase that changes nothing anywhere: it runs in a dry run
// too (connect, facts, validate).
func looking(name string, plan func(r *run) plan) flowPhase {
	return flowPhase{Name: name, Run: func(ctx context.Context, r *run) error {
		r.execute(ctx, name, plan(r))
		return nil
	}}
}

// changing is a phase that changes hosts or the workstation: a dry run
// records its plan and runs none of it.
func changing(name string, plan func(r *run) plan) flowPhase {
	return flowPhase{Name: name, Mutates: true,
		Run: func(ctx context.Context, r *run) error {
			pl := plan(r)
			r.record(name, pl)
			r.execute(ctx, name, pl)
			return nil
		},
		Plan: func(_ context.Context, r *run) error {
			r.record(name, plan(r))
			return nil
		},
	}
}

// plan is what a phase will do.
type plan struct {
	// before runs first, in order; when one fails, every host with steps
	// in this plan fails too (a join token that could not be made).
	before []step
	// steps run per host in order; hosts run in parallel, Concurrency at
	// a time, unless oneAtATime.
	steps []step
	// oneAtATime runs one host after the other and stops at the first
	// failure: masters change etcd membership, which must never happen
	// twice at once or after a failed change.
	oneAtATime bool
	// concurrency overrides Options.Concurrency (steps that only wait).
	concurrency int
}

// step is one action on one host.
type step struct {
	host *host
	// do says what the step does; the dry run prints it, the progress view
	// shows it while it runs.
	do string
	// run does it and returns a short result; nil means there is nothing to
	// do (do says why).
	run func(ctx context.Context) (string, error)
	// check marks a step that only looks (waits for Ready Nodes): it runs,
	// but it is no change.
	check bool
}

// host is one machine of the cluster file and what a run knows about it.
type host struct {
	v1alpha1.Host
	task   *progress.Task
	client *sshx.Client
	facts  *Facts
	// err is the host's first failure (*HostError); a failed host takes
	// part in no later phase.
	err error
}

func (h *host) failed() bool { return h.err != nil }

// fail records err as h's failure in phase, unless it already failed.
func (h *host) fail(phase string, err error) {
	if h.err != nil {
		return
	}
	var he *HostError
	if !errors.As(err, &he) {
		he = &HostError{Host: h.Name, Phase: phase, Err: err}
	}
	h.err = he
	h.task.Fail(he.Err)
}

// run is one execution of a flow over the hosts of a cluster file.
type run struct {
	o       Options
	cluster *v1alpha1.Cluster
	log     *slog.Logger
	rep     *progress.Reporter
	hosts   []*host
	agent   *sshx.Agent
	// knownHostsMu serialises appends to known_hosts files.
	knownHostsMu sync.Mutex
	dryRun       bool
	// factsReq is what the facts phase looks at.
	factsReq factsRequest
	// planned collects what the changing phases decided (and, in a dry
	// run, did not do).
	planned []PlannedStep
	// primary is the master whose control plane the others join: the
	// first master that already runs one, else (apply) the first master,
	// which init makes one.
	primary *host
	// acc is the cluster through the primary, made on first use.
	accessMu sync.Mutex
	acc      *clusterAccess
	apply    *applyState
	reset    *ResetOptions
	support  *supportState
	// mu guards agent, which steps running in parallel share.
	mu sync.Mutex
}

// PlannedStep is one thing a run would do on one host.
type PlannedStep struct {
	Host  string `json:"host"`
	Phase string `json:"phase"`
	Do    string `json:"do"`
	// Change is false for steps that only say why nothing needs doing.
	Change bool `json:"change"`
}

func newRun(o Options) (*run, error) {
	if err := o.complete(); err != nil {
		return nil, err
	}
	r := &run{o: o, cluster: o.Cluster, log: o.Log, rep: o.Progress}
	for _, h := range o.Cluster.Hosts {
		r.hosts = append(r.hosts, &host{Host: h, task: r.rep.Task(h.Name)})
	}
	return r, nil
}

// close ends every connection the run made.
func (r *run) close() {
	for _, h := range r.hosts {
		if h.client != nil {
			h.client.Close()
		}
	}
	if r.agent != nil {
		r.agent.Close()
	}
}

// alive lists the hosts that have not failed, in file order.
func (r *run) alive() []*host {
	var out []*host
	for _, h := range r.hosts {
		if !h.failed() {
			out = append(out, h)
		}
	}
	return out
}

// do runs phases in order: each plans, then acts (or, in a dry run,
// records the plan of every phase that would change something). A host
// that fails takes part in no later phase; the others go on. It returns
// the hosts' failures joined, or ctx's error.
func (r *run) do(ctx context.Context, command string, phases []flowPhase) error {
	r.rep.Phases(phase.Names(phases)...)
	if err := phase.Run(ctx, phases, r, phase.Options{Command: command, DryRun: r.dryRun}); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	for _, h := range r.hosts {
		if h.err != nil {
			errs = append(errs, h.err)
		} else {
			h.task.Finish()
		}
	}
	return errors.Join(errs...)
}

func (r *run) record(name string, pl plan) {
	for _, s := range append(append([]step(nil), pl.before...), pl.steps...) {
		r.planned = append(r.planned, PlannedStep{Host: s.host.Name, Phase: name, Do: s.do, Change: s.run != nil && !s.check})
	}
}

// execute runs a plan: the before steps in order, then each host's steps,
// hosts in parallel or one at a time.
func (r *run) execute(ctx context.Context, name string, pl plan) {
	var groups [][]step
	index := map[*host]int{}
	for _, s := range pl.steps {
		if s.host.failed() {
			continue
		}
		i, ok := index[s.host]
		if !ok {
			i = len(groups)
			index[s.host] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], s)
	}
	for _, s := range pl.before {
		if err := r.runStep(ctx, name, s); err != nil {
			// Hosts with work in this phase needed what failed; hosts
			// with nothing to do did not.
			for _, g := range groups {
				if i := slices.IndexFunc(g, func(s step) bool { return s.run != nil }); i >= 0 {
					g[i].host.task.Start(name, g[i].do)
					g[i].host.fail(name, fmt.Errorf("%s on %s failed: %w", s.do, s.host.Name, err))
				} else {
					r.runGroup(ctx, name, g)
				}
			}
			return
		}
	}
	if pl.oneAtATime {
		for i, g := range groups {
			if !r.runGroup(ctx, name, g) {
				for _, rest := range groups[i+1:] {
					h := rest[0].host
					h.task.Start(name, rest[0].do)
					h.fail(name, fmt.Errorf("not started: %s failed before it, and masters change one at a time", g[0].host.Name))
				}
				return
			}
		}
		return
	}
	n := r.o.Concurrency
	if pl.concurrency > 0 {
		n = pl.concurrency
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			r.runGroup(ctx, name, g)
		}()
	}
	wg.Wait()
}

// runGroup runs one host's steps in order and reports whether all
// succeeded.
func (r *run) runGroup(ctx context.Context, name string, steps []step) bool {
	for _, s := range steps {
		if err := r.runStep(ctx, name, s); err != nil {
			s.host.fail(name, err)
			return false
		}
	}
	return true
}

func (r *run) runStep(ctx context.Context, name string, s step) error {
	t := s.host.task
	if s.run == nil {
		t.Skip(name, s.do)
		r.log.Debug("nothing to do", "host", s.host.Name, "phase", name, "why", s.do)
		return nil
	}
	t.Start(name, s.do)
	r.log.Debug("step", "host", s.host.Name, "phase", name, "do", s.do)
	res, err := s.run(ctx)
	if err != nil {
		return err
	}
	t.Done(res)
	return nil
}

// writePlan prints what a dry run found, per host in file order.
func writePlan(w io.Writer, c *v1alpha1.Cluster, steps []PlannedStep) {
	fmt.Fprintf(w, "Dry run for cluster %q: nothing was changed. Per host, what would be done:\n", c.Name)
	for _, h := range c.Hosts {
		fmt.Fprintf(w, "\n%s (%s, %s)\n", h.Name, h.Role, h.Address)
		n := 0
		for _, s := range steps {
			if s.Host != h.Name {
				continue
			}
			n++
			mark := "  = "
			if s.Change {
				mark = "  + "
			}
			fmt.Fprintf(w, "%s%-12s %s\n", mark, s.Phase, s.Do)
		}
		if n == 0 {
			fmt.Fprintln(w, "  nothing: the host failed before planning (see above)")
		}
	}
	fmt.Fprintln(w, "\n(+ would change the host or the workstation; = changes nothing)")
}
