package master

import (
	"anvil.dev/anvil/etcd"
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
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// ResetOptions are the inputs of `anvil reset`.
type ResetOptions struct {
	Root hostfs.Root
	// KeepBackups leaves /var/lib/anvil/backups in place (the default of
	// the command: a reset should not destroy the way back).
	KeepBackups bool
	// KeepBinaries leaves /opt/anvil/bin and the /usr/local/bin links.
	KeepBinaries bool
	// IgnoreQuorum removes this master's etcd member even when the rest
	// would lack quorum (or goes on when the member cannot be removed).
	IgnoreQuorum bool
	Log          *slog.Logger
	Progress     func(phase, msg string)
}

// ResetResult lists what reset removed and kept.
type ResetResult struct {
	Stopped []string
	Removed []string
	Kept    []string
}

// unitNamesAnvilOwns are the systemd units anvil writes.
func unitNamesAnvilOwns() []string {
	return []string{"anvil-agent.service", "anvil-vip.service", "kube-scheduler.service", "kube-controller-manager.service", "kube-apiserver.service", "anvil-etcd.service", "anvil-backup.service", "anvil-backup.timer"}
}

// Reset stops everything anvil runs on this machine, in every layout it
// finds, and removes every file anvil wrote. It only deletes what anvil
// owns: its own units and manifests, kubeadm-named PKI and kubeconfigs,
// and anvil's directories.
func Reset(ctx context.Context, o ResetOptions) (*ResetResult, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	say := func(msg string) {
		if o.Progress != nil {
			o.Progress("reset", msg)
		}
		o.Log.Debug(msg, "phase", "reset")
	}
	res := &ResetResult{}
	var errs []error

	// A master leaves etcd first, while its member still runs, so the
	// others do not keep waiting for it (and a later join of this machine
	// finds no stale member).
	if st, err := ReadNodeState(o.Root); err == nil && st.Role == v1alpha1.RoleMaster {
		switch removed, err := leaveEtcd(ctx, o.Root, st.Node, o.IgnoreQuorum); {
		case err != nil && !o.IgnoreQuorum:
			return res, fmt.Errorf("reset: %w", err)
		case err != nil:
			say("could not leave etcd, going on: " + err.Error())
		case removed:
			say("removed this master's etcd member " + st.Node)
		}
	}

	// The supervisor (process layout) first: stopping it stops its children
	// in reverse order.
	if supervise.Running(o.Root) {
		say("stopping the supervisor and everything it runs")
		res.Stopped = append(res.Stopped, "supervisor")
	}
	if err := supervise.Stop(ctx, o.Root, 90*time.Second); err != nil {
		errs = append(errs, err)
	}

	// systemd units, when this root is a real host with systemd.
	var units []string
	for _, u := range unitNamesAnvilOwns() {
		if ok, _ := fsutil.Exists(filepath.Join(o.Root.Units(), u)); ok {
			units = append(units, u)
		}
	}
	if len(units) > 0 && (o.Root == "" || o.Root == "/") {
		say("stopping " + strings.Join(units, ", "))
		var cs []component.Spec
		for i := len(units) - 1; i >= 0; i-- {
			cs = append(cs, component.Spec{Name: strings.TrimSuffix(units[i], ".service"), Unit: units[i]})
		}
		if err := layout.Stop(ctx, layout.Options{Layout: v1alpha1.LayoutSystemd}, cs, true); err != nil {
			errs = append(errs, err)
		}
		res.Stopped = append(res.Stopped, units...)
	}
	for _, u := range units {
		res.Removed = appendRemoved(res.Removed, filepath.Join(o.Root.Units(), u), &errs)
	}
	if len(units) > 0 && (o.Root == "" || o.Root == "/") {
		if err := layout.Reload(ctx); err != nil {
			errs = append(errs, err)
		}
	}

	// Static pods anvil wrote (the kubelet stops them when they go).
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		p := filepath.Join(o.Root.Manifests(), name+".yaml")
		if ok, _ := fsutil.Exists(p); ok {
			res.Removed = appendRemoved(res.Removed, p, &errs)
		}
	}

	// Files: kubeadm-named PKI and kubeconfigs, anvil's directories.
	paths := []string{
		o.Root.PKI(),
		o.Root.Kubeconfig(pki.AdminKubeconfig),
		o.Root.Kubeconfig(pki.SuperAdminKubeconfig),
		o.Root.Kubeconfig(pki.ControllerManagerKubeconfig),
		o.Root.Kubeconfig(pki.SchedulerKubeconfig),
		o.Root.Kubeconfig(pki.VIPKubeconfig),
		o.Root.AnvilConf(),
		o.Root.Logs(),
		o.Root.Run(),
	}
	for _, p := range paths {
		if ok, _ := fsutil.Exists(p); ok {
			res.Removed = appendRemoved(res.Removed, p, &errs)
		}
	}
	// /var/lib/anvil, except backups unless asked.
	state := o.Root.State()
	entries, err := os.ReadDir(state)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		p := filepath.Join(state, e.Name())
		// Labs belong to the workstation side of anvil, not to this node.
		if e.Name() == "lab" {
			res.Kept = append(res.Kept, p)
			continue
		}
		if p == o.Root.Backups() && o.KeepBackups {
			if n, _ := os.ReadDir(p); len(n) > 0 {
				res.Kept = append(res.Kept, p)
				continue
			}
		}
		res.Removed = appendRemoved(res.Removed, p, &errs)
	}
	if rest, _ := os.ReadDir(state); len(rest) == 0 {
		os.Remove(state)
	}
	if !o.KeepBinaries {
		for _, name := range []string{"anvil", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
			link := o.Root.Join(hostfs.LinkDir, name)
			if target, err := os.Readlink(link); err == nil && strings.Contains(target, "/opt/anvil/") {
				res.Removed = appendRemoved(res.Removed, link, &errs)
			}
		}
		if ok, _ := fsutil.Exists(o.Root.Path("/opt/anvil")); ok {
			res.Removed = appendRemoved(res.Removed, o.Root.Path("/opt/anvil"), &errs)
		}
	}
	for _, d := range []string{o.Root.Manifests(), o.Root.Kubernetes()} {
		if rest, err := os.ReadDir(d); err == nil && len(rest) == 0 {
			os.Remove(d)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("reset: %w", err)
	}
	return res, nil
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

func appendRemoved(removed []string, p string, errs *[]error) []string {
	if err := os.RemoveAll(p); err != nil {
		*errs = append(*errs, err)
		return removed
	}
	return append(removed, p)
}
