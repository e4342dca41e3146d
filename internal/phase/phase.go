package phase

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"anvil.dev/anvil/internal/progress"
)

// Phase is one step of a command, run with the command's state S.
type Phase[S any] struct {
	Name        string
	Description string
	// Mutates marks a phase that changes the machine, the cluster or the
	// workstation. A dry run runs only the phases that do not, and for
	// those that do calls Plan (when set) instead of Run.
	Mutates bool
	Run     func(ctx context.Context, s S) error
	// Plan, for a phase that mutates, works out and records what Run would
	// do, changing nothing: a dry run prints exactly what a real run does.
	Plan func(ctx context.Context, s S) error
}

// Options change how Run runs a list.
type Options struct {
	// Command names the command in errors: "init phase etcd: …".
	Command string
	// Only runs just these phases, in the list's order; all when empty.
	Only []string
	// DryRun runs the phases that change nothing, and plans the others.
	DryRun bool
	// Task shows each phase to the operator; nil shows nothing.
	Task *progress.Task
	// Quiet phases are run without being announced (a phase whose own
	// output says everything, or one that usually has nothing to do).
	Quiet []string
}

// UnknownPhaseError names a phase that is not in the list, and the ones
// that are.
type UnknownPhaseError struct {
	Command string
	Phase   string
	Known   []string
}

func (e *UnknownPhaseError) Error() string {
	return fmt.Sprintf("unknown %s phase %q: phases are %s", e.Command, e.Phase, strings.Join(e.Known, ", "))
}

// Error is a phase's failure, naming the command and the phase.
type Error struct {
	Command string
	Phase   string
	Err     error
}

func (e *Error) Error() string {
	if e.Command == "" {
		return fmt.Sprintf("phase %s: %v", e.Phase, e.Err)
	}
	return fmt.Sprintf("%s phase %s: %v", e.Command, e.Phase, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Run runs phases in order with state s and stops at the first error,
// which it returns as *Error. It checks ctx between phases.
func Run[S any](ctx context.Context, phases []Phase[S], s S, o Options) error {
	names := Names(phases)
	for _, n := range o.Only {
		if !slices.Contains(names, n) {
			return &UnknownPhaseError{Command: o.Command, Phase: n, Known: names}
		}
	}
	for _, p := range phases {
		if len(o.Only) > 0 && !slices.Contains(o.Only, p.Name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		run := p.Run
		if o.DryRun && p.Mutates {
			if p.Plan == nil {
				continue
			}
			run = p.Plan
		}
		quiet := slices.Contains(o.Quiet, p.Name)
		if !quiet {
			o.Task.Start(p.Name, p.Description)
		}
		if err := run(ctx, s); err != nil {
			return &Error{Command: o.Command, Phase: p.Name, Err: err}
		}
		if !quiet {
			o.Task.Done("")
		}
	}
	return nil
}

// Names lists the phases' names in order.
func Names[S any](phases []Phase[S]) []string {
	out := make([]string, 0, len(phases))
	for _, p := range phases {
		out = append(out, p.Name)
	}
	return out
}

// Help describes the phases for a command's --help: one line each, the
// name, then what it does, and a mark on the phases a dry run leaves out.
func Help[S any](phases []Phase[S]) string {
	width := 0
	for _, p := range phases {
		width = max(width, len(p.Name))
	}
	var b strings.Builder
	for _, p := range phases {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, p.Name, p.Description)
	}
	return b.String()
}
