package master

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/phase"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// ResetOptions are the inputs of `anvil reset`.
type ResetOptions struct {
	Root hostfs.Root
	// KeepBackups leaves /var/lib/anvil/backups in place (the default of
	// the command: a reset should not destroy the way back).
	KeepBackups bool
	// KeepBinaries leaves what an upload put on the host: /opt/anvil/bin,
	// the /usr/local/bin links and the image archives in
	// /var/lib/anvil/images (a join re-run after an interrupted one
	// resets the host and must find them).
	KeepBinaries bool
	// IgnoreQuorum removes this master's etcd member even when the rest
	// would lack quorum (or goes on when the member cannot be removed).
	IgnoreQuorum bool
	// DryRun lists what reset would stop, unmount and remove, changing
	// nothing (leaving etcd is not planned: it needs the member).
	DryRun bool
	Log    *slog.Logger
	Task   *progress.Task
}

// ResetResult lists what reset stopped, unmounted, removed and kept (in a
// dry run, what it would).
type ResetResult struct {
	Stopped   []string
	Unmounted []string
	Removed   []string
	Kept      []string
}

type resetRun struct {
	o    ResetOptions
	res  ResetResult
	errs []error
	// node is the plan for the node stack, made at its first use.
	node *nodeReset
}

type resetPhase = phase.Phase[*resetRun]

// resetPhases is `anvil reset`, top to bottom. Only leaving etcd can stop
// it; every later phase goes on past a failure and reports it at the end,
// so one stuck file never leaves the rest of the machine as it was.
func resetPhases() []resetPhase {
	return []resetPhase{
		{Name: "leave-etcd", Description: "on a master, remove this machine's etcd member (refused without quorum unless --ignore-quorum)", Mutates: true, Run: resetLeaveEtcdPhase},
		{Name: "remove-pods", Description: "with the node stack: remove every pod through containerd (crictl rmp -af), or kill the pods' processes when it does not answer", Mutates: true, Run: resetPodsPhase, Plan: resetPodsPhase},
		{Name: "stop-node", Description: "stop the kubelet, then containerd, and remove their units", Mutates: true, Run: resetStopNodePhase, Plan: resetStopNodePhase},
		{Name: "stop-supervisor", Description: "stop anvil's supervisor and everything it runs (process layout)", Mutates: true, Run: resetStopSupervisorPhase, Plan: resetStopSupervisorPhase},
		{Name: "stop-units", Description: "stop and remove the systemd units anvil wrote", Mutates: true, Run: resetStopUnitsPhase, Plan: resetStopUnitsPhase},
		{Name: "remove-manifests", Description: "remove the static pods anvil wrote (the kubelet stops them)", Mutates: true, Run: resetManifestsPhase, Plan: resetManifestsPhase},
		{Name: "remove-node-files", Description: "unmount what is mounted in the kubelet's and containerd's directories, remove the pod network, the kubelet's and containerd's files", Mutates: true, Run: resetNodeFilesPhase, Plan: resetNodeFilesPhase},
		{Name: "remove-files", Description: "remove the PKI, kubeconfigs, /etc/anvil and anvil's state (backups kept unless asked, image archives with --keep-binaries)", Mutates: true, Run: resetFilesPhase, Plan: resetFilesPhase},
		{Name: "remove-binaries", Description: "remove /opt/anvil and its links in /usr/local/bin (unless --keep-binaries)", Mutates: true, Run: resetBinariesPhase, Plan: resetBinariesPhase},
	}
}

// ResetPhaseHelp describes reset's phases for --help.
func ResetPhaseHelp() string { return phase.Help(resetPhases()) }

// Reset stops everything anvil runs on this machine, in every layout it
// finds, and removes every file anvil wrote. It only deletes what anvil
// owns: its own units and manifests, kubeadm-named PKI and kubeconfigs,
// and anvil's directories.
func Reset(ctx context.Context, o ResetOptions) (*ResetResult, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &resetRun{o: o}
	if err := phase.Run(ctx, resetPhases(), r, phase.Options{Command: "reset", DryRun: o.DryRun, Task: o.Task}); err != nil {
		return &r.res, err
	}
	if err := errors.Join(r.errs...); err != nil {
		return &r.res, fmt.Errorf("reset: %w", err)
	}
	return &r.res, nil
}

// resetLeaveEtcdPhase takes a master out of etcd first, while its member
// still runs, so the others do not keep waiting for it (and a later join of
// this machine finds no stale member).
func resetLeaveEtcdPhase(ctx context.Context, r *resetRun) error {
	st, err := ReadNodeState(r.o.Root)
	if err != nil || st.Role != v1alpha1.RoleMaster {
		return nil
	}
	switch removed, err := leaveEtcd(ctx, r.o.Root, st.Node, r.o.IgnoreQuorum); {
	case err != nil && !r.o.IgnoreQuorum:
		return err
	case err != nil:
		r.o.Task.Warn("could not leave etcd, going on: %v", err)
	case removed:
		r.o.Task.Say("removed this master's etcd member %s", st.Node)
	}
	return nil
}

// resetStopSupervisorPhase stops the process layout's supervisor, which
// stops its children in reverse order.
func resetStopSupervisorPhase(ctx context.Context, r *resetRun) error {
	if supervise.Running(r.o.Root) {
		r.res.Stopped = append(r.res.Stopped, "supervisor")
		if r.o.DryRun {
			return nil
		}
		r.o.Task.Say("stopping the supervisor and everything it runs")
	}
	if r.o.DryRun {
		return nil
	}
	if err := supervise.Stop(ctx, r.o.Root, 90*time.Second); err != nil {
		r.errs = append(r.errs, err)
	}
	return nil
}

// resetStopUnitsPhase stops anvil's systemd units (on a real host with
// systemd) and removes their files.
func resetStopUnitsPhase(ctx context.Context, r *resetRun) error {
	var units []string
	for _, u := range OwnedUnits() {
		if ok, _ := fsutil.Exists(filepath.Join(r.o.Root.Units(), u)); ok {
			units = append(units, u)
		}
	}
	realRoot := r.o.Root == "" || r.o.Root == "/"
	if len(units) > 0 && realRoot && r.o.DryRun {
		r.res.Stopped = append(r.res.Stopped, units...)
	} else if len(units) > 0 && realRoot {
		r.o.Task.Say("stopping %s", strings.Join(units, ", "))
		var cs []component.Spec
		for i := len(units) - 1; i >= 0; i-- {
			cs = append(cs, component.Spec{Name: strings.TrimSuffix(units[i], ".service"), Unit: units[i]})
		}
		if err := layout.Stop(ctx, layout.Options{Layout: v1alpha1.LayoutSystemd}, cs, true); err != nil {
			r.errs = append(r.errs, err)
		}
		r.res.Stopped = append(r.res.Stopped, units...)
	}
	for _, u := range units {
		r.remove(filepath.Join(r.o.Root.Units(), u))
	}
	if len(units) > 0 && realRoot && !r.o.DryRun {
		if err := layout.Reload(ctx); err != nil {
			r.errs = append(r.errs, err)
		}
	}
	return nil
}

func resetManifestsPhase(_ context.Context, r *resetRun) error {
	for _, name := range OwnedStaticPods() {
		p := filepath.Join(r.o.Root.Manifests(), name+".yaml")
		if ok, _ := fsutil.Exists(p); ok {
			r.remove(p)
		}
	}
	return nil
}

// resetFilesPhase removes kubeadm-named PKI and kubeconfigs and anvil's
// directories; /var/lib/anvil's backups stay unless asked, its labs always
// (they belong to the workstation side of anvil, not to this node).
func resetFilesPhase(_ context.Context, r *resetRun) error {
	root := r.o.Root
	paths := []string{root.PKI()}
	for _, kc := range pki.Kubeconfigs() {
		paths = append(paths, root.Kubeconfig(kc.Name))
	}
	paths = append(paths, root.AnvilConf(), root.Logs(), root.Run())
	for _, p := range paths {
		if ok, _ := fsutil.Exists(p); ok {
			r.remove(p)
		}
	}
	state := root.State()
	entries, err := os.ReadDir(state)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.errs = append(r.errs, err)
	}
	for _, e := range entries {
		p := filepath.Join(state, e.Name())
		if e.Name() == "lab" || (p == root.Path(node.ImagesDir) && r.o.KeepBinaries) {
			r.res.Kept = append(r.res.Kept, p)
			continue
		}
		if p == root.Backups() && r.o.KeepBackups {
			if n, _ := os.ReadDir(p); len(n) > 0 {
				r.res.Kept = append(r.res.Kept, p)
				continue
			}
		}
		r.remove(p)
	}
	if rest, _ := os.ReadDir(state); len(rest) == 0 && !r.o.DryRun {
		os.Remove(state)
	}
	return nil
}

func resetBinariesPhase(_ context.Context, r *resetRun) error {
	root := r.o.Root
	if !r.o.KeepBinaries {
		links, _ := os.ReadDir(root.Path(hostfs.LinkDir))
		for _, l := range links {
			link := root.Join(hostfs.LinkDir, l.Name())
			if target, err := os.Readlink(link); err == nil && strings.Contains(target, "/opt/anvil/") {
				r.remove(link)
			}
		}
		if ok, _ := fsutil.Exists(root.Path("/opt/anvil")); ok {
			r.remove(root.Path("/opt/anvil"))
		}
	}
	for _, d := range []string{root.Manifests(), root.Kubernetes()} {
		if rest, err := os.ReadDir(d); err == nil && len(rest) == 0 && !r.o.DryRun {
			os.Remove(d)
		}
	}
	return nil
}

// remove deletes p and records it, or records why it could not; a dry
// run only records it.
func (r *resetRun) remove(p string) {
	if r.o.DryRun {
		r.res.Removed = append(r.res.Removed, p)
		return
	}
	if err := os.RemoveAll(p); err != nil {
		r.errs = append(r.errs, err)
		return
	}
	r.res.Removed = append(r.res.Removed, p)
}

// leaveEtcd removes this master's member when other members exist. It
// reports whether it removed one.
func leaveEtcd(ctx context.Context, root hostfs.Root, name string, force bool) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	alone := func() bool {
		c, _, err := v1alpha1.Load(root.Path(ClusterFile))
		return err == nil && len(c.Masters()) <= 1
	}
	cli, err := etcd.Dial(cctx, root)
	if err != nil {
		if alone() {
			return false, nil
		}
		return false, err
	}
	defer cli.Close()
	ms, err := etcd.ListMembers(cctx, cli)
	if err != nil {
		if alone() {
			return false, nil // a single master whose etcd is already down
		}
		return false, fmt.Errorf("cannot reach the local etcd member to leave the cluster: %w", err)
	}
	if len(ms) <= 1 {
		return false, nil // the last member: the cluster goes with it
	}
	if _, err := etcd.RemoveMember(cctx, cli, name, force); err != nil {
		if errors.Is(err, etcd.ErrNoSuchMember) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
