package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// What every restore mode shares: reading this master and taking the
// machine's restore lock, stopping and starting its components (noting what
// was stopped), and rolling back and cleaning up after a failed run.

// readNode reads what every mode needs of this master: its state, cluster
// file, plan, components and etcd configuration; and takes the machine's
// restore lock.
func (r *restoreRun) readNode() error {
	root := r.o.Root
	st, err := master.ReadNodeState(root)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: restore replaces the data of a running master. On a new or reset machine, first put the backup's CAs, keys and cluster file in place "+
			"(anvil backup export-files FILE), then make it a master with them (anvil init -f %s --node NAME), then restore", master.ErrNotInitialized, master.ClusterFile)
	}
	if err != nil {
		return err
	}
	if st.Role != v1alpha1.RoleMaster {
		return fmt.Errorf("node %s is a %s: restore runs on a master", st.Node, st.Role)
	}
	switch st.Layout {
	case v1alpha1.LayoutProcess, v1alpha1.LayoutSystemd:
	default:
		return fmt.Errorf("%w: the %s layout (the kubelet runs the control plane; stop it by moving the manifests out of %s, then restore by hand with anvil backup export-snapshot)",
			ErrRestoreUnsupported, st.Layout, root.Manifests())
	}
	r.state = st
	r.result.Node = st.Node
	c, _, err := v1alpha1.Load(root.Path(master.ClusterFile))
	if err != nil {
		return err
	}
	r.cluster = c
	h, ok := c.Host(st.Node)
	if !ok {
		return fmt.Errorf("node %q is not in %s", st.Node, root.Path(master.ClusterFile))
	}
	p := master.Plan{Cluster: c, Node: h, KubernetesVersion: st.KubernetesVersion}
	if st.Layout == v1alpha1.LayoutProcess {
		p.Root, p.AnvilBinary = root, r.o.Anvil
		if p.AnvilBinary == "" {
			p.AnvilBinary = root.Join(hostfs.LinkDir, images.AnvilBinary)
		}
	}
	if r.plan, err = p.Complete(); err != nil {
		return err
	}
	r.cp = &master.ControlPlane{Plan: r.plan, Layout: st.Layout, Root: root, Anvil: r.o.Anvil, Log: r.log, Task: r.o.Task}
	if r.cs, err = r.cp.Components(); err != nil {
		return err
	}
	cfgPath := root.Path(master.EtcdConfigFile)
	if r.etcdCfg, err = embed.ConfigFromFile(cfgPath); err != nil {
		return fmt.Errorf("read etcd config %s: %w", cfgPath, err)
	}
	r.dataDir = filepath.Clean(r.etcdCfg.Dir)
	if r.dataDir == "" || !filepath.IsAbs(r.dataDir) {
		return fmt.Errorf("etcd config %s: data-dir %q is not an absolute path", cfgPath, r.etcdCfg.Dir)
	}
	hash, err := pki.CAHashFromFile(root.Join(hostfs.PKIDir, pki.CertFile(pki.CACertAndKeyBaseName)))
	if err != nil {
		return err
	}
	r.caHash = hash.String()
	r.result.CACertHash = r.caHash

	// One restore at a time on a machine.
	lockPath := root.Join(hostfs.RunDir, "restore.lock")
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("another restore is running on this machine (%s is locked)", lockPath)
	}
	r.lockFile = f
	return nil
}

func restoreStopControlPlanePhase(ctx context.Context, r *restoreRun) error {
	if r.rejoin.joined {
		return nil
	}
	r.downSince = time.Now()
	var cp []component.Spec
	for _, c := range r.cs {
		if c.Name != master.Etcd {
			cp = append(cp, c)
		}
	}
	return r.stop(ctx, cp, killGrace)
}

func restoreStopEtcdPhase(ctx context.Context, r *restoreRun) error {
	if r.rejoin.joined {
		return nil
	}
	// With the apiservers stopped nothing writes; what etcd reports now is
	// the highest revision it served.
	live := r.liveRevision(ctx)
	if err := r.stop(ctx, r.components(master.Etcd), 0); err != nil {
		return err
	}
	// The data itself has the last word: the database's newest revision,
	// read with etcd gone (the lock would block otherwise).
	db := filepath.Join(r.dataDir, "member", "snap", "db")
	old, err := dbRevision(db, 10*time.Second)
	if err != nil && !(r.o.Mode != RestoreSnapshot && errors.Is(err, fs.ErrNotExist)) {
		r.log.Warn("cannot read the old etcd database's revision", "file", db, "err", err)
	}
	r.served = max(live, old)
	r.result.ServedRevision = r.served
	return nil
}

func (r *restoreRun) components(names ...string) []component.Spec {
	var out []component.Spec
	for _, c := range r.cs {
		if slices.Contains(names, c.Name) {
			out = append(out, c)
		}
	}
	return out
}

// killGrace is how long a stopping control-plane component gets before
// restore kills it: an apiserver drains its watches for up to its request
// timeout (a minute), and what it would finish is about to be replaced.
const killGrace = 3 * time.Second

// stop stops cs and waits until they are gone (see ControlPlane.Stop),
// noting them first so that a stop that fails half way is still undone.
func (r *restoreRun) stop(ctx context.Context, cs []component.Spec, grace time.Duration) error {
	r.stopped = append(r.stopped, cs...)
	// A leave in an earlier run stopped them already.
	return r.cp.Stop(ctx, cs, grace, r.o.Mode != RestoreSnapshot)
}

// start has the layout run cs again (their process specs put back).
func (r *restoreRun) start(ctx context.Context, cs []component.Spec) error {
	if err := r.cp.Start(ctx, cs); err != nil {
		return err
	}
	r.stopped = slices.DeleteFunc(r.stopped, func(s component.Spec) bool {
		return slices.ContainsFunc(cs, func(c component.Spec) bool { return c.Name == s.Name })
	})
	return nil
}

// rollback starts again what a failed restore stopped. Before the swap
// that is the old control plane on its old data, as if nothing happened;
// after it, the restored data stays and the error says where the old is.
func (r *restoreRun) rollback(cause error) {
	if r.newDir != "" {
		os.RemoveAll(r.newDir)
	}
	r.withdrawLearner()
	if len(r.stopped) == 0 {
		return
	}
	if r.setAside {
		// etcd on an empty data directory would bootstrap a new, empty
		// cluster: what was stopped stays stopped.
		where := "this member's old data is in " + r.result.Aside
		if r.result.Aside == "" {
			where = "this member had left already"
		}
		r.o.Task.Say("the control plane stays stopped until this master rejoins the restored cluster (anvil restore --rejoin ENDPOINT); %s: %v", where, cause)
		return
	}
	switch {
	case r.o.Mode == RestoreRejoin:
		r.o.Task.Say("this member rejoined; starting the control plane again: %s", cause.Error())
	case r.swapped:
		r.o.Task.Say("the restored data is in place but did not come up: %v; the old data is in %s", cause, r.result.Aside)
	default:
		r.o.Task.Say("starting the control plane again on its old data: %s", cause.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var order []component.Spec
	for _, c := range r.cs { // start order
		if slices.ContainsFunc(r.stopped, func(s component.Spec) bool { return s.Name == c.Name }) {
			order = append(order, c)
		}
	}
	if err := r.start(ctx, order); err != nil {
		r.log.Error("rollback: cannot start the control plane again", "err", err)
	}
}

func (r *restoreRun) cleanup() {
	if r.staging != "" {
		os.RemoveAll(r.staging)
	}
	if r.lockFile != nil {
		r.lockFile.Close()
	}
}
