package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
)

// resetPhases is `anvil cluster reset`: workers first, then masters one at
// a time with the primary last, so the control plane outlives every node
// that talks to it and etcd loses one member at a time (`anvil reset` on a
// master removes its own member first).
func resetPhases() []flowPhase {
	return []flowPhase{
		looking("connect", planConnect),             // connect.go
		looking("facts", planFacts),                 // facts.go
		changing("reset-workers", planResetWorkers), // reset.go
		changing("reset-masters", planResetMasters), // reset.go
	}
}

// ResetOptions are the inputs of Reset.
type ResetOptions struct {
	Options
	// DryRun connects and gathers facts, then plans and changes nothing
	// (ResetResult.WritePlan prints the plan).
	DryRun bool
	// RemoveBackups also deletes the masters' local etcd backups.
	RemoveBackups bool
	// Kubeconfig is the workstation's admin kubeconfig, removed once every
	// host is reset; empty means DefaultKubeconfigPath(ClusterFile).
	Kubeconfig string
}

// ResetResult is what a reset did.
type ResetResult struct {
	Plan []PlannedStep `json:"plan"`
	// RemovedKubeconfig is the workstation file removed, if any.
	RemovedKubeconfig string `json:"removedKubeconfig,omitempty"`
	cluster           *v1alpha1.Cluster
}

// WritePlan prints the plan per host, in the cluster file's order.
func (res *ResetResult) WritePlan(w io.Writer) { writePlan(w, res.cluster, res.Plan) }

// Reset removes anvil from every host of the cluster in o.
func Reset(ctx context.Context, o ResetOptions) (*ResetResult, error) {
	r, err := newRun(o.Options)
	if err != nil {
		return nil, err
	}
	defer r.close()
	r.dryRun = o.DryRun
	r.reset = &o
	r.factsReq = factsRequest{version: r.cluster.KubernetesVersion}
	err = r.do(ctx, "reset", resetPhases())
	res := &ResetResult{Plan: r.planned, cluster: r.cluster}
	if o.DryRun {
		return res, err
	}
	if err != nil {
		return res, err
	}
	kc := o.Kubeconfig
	if kc == "" && o.ClusterFile != "" {
		kc = DefaultKubeconfigPath(o.ClusterFile)
	}
	if kc != "" {
		if err := os.Remove(kc); err == nil {
			res.RemovedKubeconfig = kc
			r.rep.Say("removed %s", kc)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("remove kubeconfig %s: %w", kc, err)
		}
	}
	return res, nil
}

func planResetWorkers(r *run) plan {
	var pl plan
	for _, h := range r.alive() {
		if !h.IsMaster() {
			pl.steps = append(pl.steps, r.resetStep(h))
		}
	}
	return pl
}

func planResetMasters(r *run) plan {
	pl := plan{oneAtATime: true}
	var masters []*host
	for _, h := range r.alive() {
		if h.IsMaster() {
			masters = append(masters, h)
		}
	}
	// Reverse file order puts the first master, the one the others
	// joined, last.
	slices.Reverse(masters)
	for _, h := range masters {
		pl.steps = append(pl.steps, r.resetStep(h))
	}
	return pl
}

func (r *run) resetStep(h *host) step {
	f := h.facts
	if !f.Member() && len(f.Owned) == 0 && len(f.Leftovers) == 0 && !anyActive(f.Units) {
		return step{host: h, do: "nothing to do: nothing of anvil's here"}
	}
	do := fmt.Sprintf("anvil reset --force, then remove /opt/anvil, its links in %s and the image archives in %s", strings.Join(slices.Sorted(maps.Values(linkDirs())), ", "), imagesDir)
	if r.reset.RemoveBackups {
		do = strings.Replace(do, "--force", "--force --remove-backups", 1)
	}
	return step{host: h, do: do, run: func(ctx context.Context) (string, error) {
		if err := r.runLogged(ctx, h, "anvil reset", resetScript(r.reset.RemoveBackups), nil, io.Discard); err != nil {
			return "", err
		}
		return "nothing of anvil's left", nil
	}}
}

func anyActive(units map[string]string) bool {
	for _, s := range units {
		if s != "" && s != "inactive" && s != "unknown" {
			return true
		}
	}
	return false
}

// resetScript runs the installed anvil's reset, whichever version it is,
// then removes what apply itself put on the host.
//
// On a master, the components that talk to etcd through the apiserver
// stop first, while etcd still serves them: anvil reset takes the
// master's etcd member out before it stops anything, and an apiserver
// whose member is gone spends systemd's whole stop timeout (90 s) retrying
// storage on its way out. When reset refuses (it would cost etcd its
// quorum), they are started again, so a refused reset changes nothing.
// Units left "failed" are forgotten, so nothing of anvil's shows in
// systemctl afterwards.
func resetScript(removeBackups bool) string {
	flags := "--force"
	if removeBackups {
		flags += " --remove-backups"
	}
	return locked(strings.Join([]string{
		"rc=0",
		"a=" + hostfs.LinkDir + "/anvil",
		`[ -x "$a" ] || a=$(ls -1 ` + hostfs.BinDir + `/*/anvil 2>/dev/null | head -n 1)`,
		"stopped=",
		"if [ -e " + hostfs.UnitDir + "/anvil-etcd.service ]; then",
		"  for u in " + strings.Join(apiserverClients(), " ") + "; do",
		`    if systemctl is-active -q "$u"; then systemctl stop "$u" && stopped="$stopped $u"; fi`,
		"  done",
		"fi",
		`if [ -n "$a" ] && [ -x "$a" ]; then "$a" reset ` + flags + ` >/dev/null || rc=$?; fi`,
		`if [ "$rc" -ne 0 ] && [ -n "$stopped" ]; then systemctl start $stopped || true; exit "$rc"; fi`,
		"systemctl reset-failed " + strings.Join(anvilUnits(), " ") + " 2>/dev/null || true",
		"for l in " + strings.Join(linkGlobs(), " ") + "; do",
		`  t=$(readlink "$l") || continue`,
		`  case "$t" in ` + hostfs.BinDir + `/*) rm -f "$l" ;; esac`,
		"done",
		// The apply lock this script holds goes too: it is anvil's. So
		// are the image archives apply put on the host.
		"rm -rf /opt/anvil " + hostfs.RunDir + " " + imagesDir,
		"rmdir " + hostfs.StateDir + " 2>/dev/null || true",
		`exit "$rc"`,
	}, "\n"))
}

// linkGlobs match every link apply may have made, in every link
// directory; only those pointing into /opt/anvil/bin are removed.
func linkGlobs() []string {
	var out []string
	for _, d := range slices.Sorted(maps.Values(linkDirs())) {
		out = append(out, d+"/*")
	}
	return out
}

// apiserverClients are a master's units that need its apiserver, in the
// order they stop: everything but etcd.
func apiserverClients() []string {
	return []string{"anvil-agent.service", "anvil-vip.service", "kube-scheduler.service", "kube-controller-manager.service", "kube-apiserver.service"}
}
