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

	clientv3 "go.etcd.io/etcd/client/v3"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/master"
)

// A cluster restore never restores a snapshot on more than one master:
// two members restored separately would be two clusters, and one restored
// member next to members holding the old data would mix the two. So the
// other masters leave first (their members stop and their data goes
// aside: nothing serves the old cluster any more), the first master
// restores the snapshot as a one-member cluster, and the others rejoin it
// one at a time as fresh learners that catch up from it, like a
// control-plane join, before they are promoted.

// rejoinState is what a rejoin learns on its way.
type rejoinState struct {
	// joined says this master's member already belongs to the restored
	// cluster (a re-run after a rejoin that went through).
	joined bool
}

func leaveCheckPhase(ctx context.Context, r *restoreRun) error {
	if err := r.readNode(); err != nil {
		return err
	}
	ms := r.readMembership(ctx)
	r.result.Members = ms
	if why := leaveRefusal(ms, r.etcdCfg.Name); why != "" && !r.o.Force {
		return r.refuse(true, "%s", why)
	}
	return nil
}

// setAsidePhase moves the member's data directory aside. The etcd units
// stay stopped (and, under systemd, disabled) until the member rejoins: an
// etcd started on an empty directory would bootstrap a new, empty cluster.
func setAsidePhase(ctx context.Context, r *restoreRun) error {
	if r.rejoin.joined {
		return nil
	}
	r.setAside = true
	if ok, err := fsutil.Exists(r.dataDir); err != nil || !ok {
		if err == nil {
			r.o.Task.Say("no data in %s: this member left already", r.dataDir)
		}
		return err
	}
	aside := filepath.Join(filepath.Dir(r.dataDir), "before-restore-"+r.stamp)
	if err := os.Mkdir(aside, 0o700); err != nil {
		return err
	}
	r.result.Aside = aside
	if err := os.Rename(r.dataDir, filepath.Join(aside, filepath.Base(r.dataDir))); err != nil {
		return fmt.Errorf("move %s aside: %w", r.dataDir, err)
	}
	r.o.Task.Say("the old data of this member is in %s; etcd stays stopped until the member rejoins (anvil restore --rejoin)", aside)
	return nil
}

func rejoinCheckPhase(ctx context.Context, r *restoreRun) error {
	if err := r.readNode(); err != nil {
		return err
	}
	if r.o.Endpoint == r.plan.EtcdClientURL() {
		return fmt.Errorf("etcd endpoint %s is this master's own member: give the client URL of the master the backup was restored on", r.o.Endpoint)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cli, err := etcd.Dial(cctx, r.o.Root, r.o.Endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	st, err := cli.Status(cctx, r.o.Endpoint)
	if err != nil {
		return fmt.Errorf("etcd at %s (the restored cluster) does not answer: %w", r.o.Endpoint, err)
	}
	ms, err := etcd.ListMembers(ctx, cli)
	if err != nil {
		return fmt.Errorf("etcd at %s: %w", r.o.Endpoint, err)
	}
	r.result.Members = ms
	r.result.Revision = st.Header.Revision
	// A member that answers here with the same cluster ID has rejoined
	// already: only the control plane may be left to start.
	if local := r.localStatus(ctx); local != nil && local.Header.ClusterId == st.Header.ClusterId {
		r.rejoin.joined = true
		r.o.Task.Say("this master's member is already in the cluster of %s: only the control plane is left to start", r.o.Endpoint)
		return nil
	}
	self := slices.IndexFunc(ms, func(m etcd.Member) bool { return m.Name == r.etcdCfg.Name })
	if self >= 0 && ms[self].Healthy && !ms[self].Learner {
		return fmt.Errorf("the cluster of %s has a healthy voting member named %s, but it is not this master's: another machine answers as %s", r.o.Endpoint, r.etcdCfg.Name, r.etcdCfg.Name)
	}
	return nil
}

// localStatus is this master's own member's status, nil when it does not
// answer.
func (r *restoreRun) localStatus(ctx context.Context) *clientv3.StatusResponse {
	if !localEtcdListens() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cli, err := etcd.Dial(ctx, r.o.Root)
	if err != nil {
		return nil
	}
	defer cli.Close()
	st, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		return nil
	}
	return st
}

// rejoinMemberPhase adds this master to the restored cluster as a learner
// and rewrites its etcd config to join that cluster, the old config kept
// aside.
func rejoinMemberPhase(ctx context.Context, r *restoreRun) error {
	if r.rejoin.joined {
		return nil
	}
	l, err := etcd.JoinAsLearner(ctx, r.o.Root, []string{r.o.Endpoint}, r.etcdCfg.Name, r.plan.EtcdPeerURL(), r.o.Force)
	if err != nil {
		return err
	}
	r.learner = l
	if l.Added.Replaced != "" {
		r.o.Task.Say("replaced the stale etcd member %s", l.Added.Replaced)
	}
	p := r.plan
	p.Etcd = master.EtcdMember{Name: r.etcdCfg.Name, InitialCluster: l.Added.InitialCluster, State: master.EtcdExistingCluster, Token: r.etcdCfg.InitialClusterToken}
	files, err := master.ConfigFiles(p, func(hp string) ([]byte, error) { return os.ReadFile(r.o.Root.Path(hp)) })
	if err != nil {
		return err
	}
	i := slices.IndexFunc(files, func(f component.OutputFile) bool { return f.Path == master.EtcdConfigFile })
	if i < 0 {
		return errors.New("the rendered control-plane files have no etcd config")
	}
	cfgPath := r.o.Root.Path(master.EtcdConfigFile)
	if old, err := os.ReadFile(cfgPath); err == nil && r.result.Aside != "" {
		if err := fsutil.WriteFile(filepath.Join(r.result.Aside, "files", master.EtcdConfigFile), old, 0o600, 0o700); err != nil {
			return err
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := fsutil.WriteFile(cfgPath, files[i].Data, files[i].Mode, component.DirMode); err != nil {
		return err
	}
	r.result.Replaced = append(r.result.Replaced, cfgPath)
	return nil
}

// rejoinEtcdPhase starts the learner, waits until it serves, and promotes
// it once it has caught up with the restored member.
func rejoinEtcdPhase(ctx context.Context, r *restoreRun) error {
	if r.rejoin.joined {
		return nil
	}
	member := r.components(master.Etcd)
	// The set-aside took the data directory away, and etcd's unit may
	// write only there (ReadWritePaths=), which systemd needs to exist
	// before it starts etcd; etcd fills the empty directory as a learner.
	if err := os.Mkdir(r.dataDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("make the etcd data directory: %w", err)
	}
	// Written again from the plan: a leave in an earlier run took the
	// process layout's spec away.
	if err := r.start(ctx, member); err != nil {
		return err
	}
	if err := r.cp.WaitReady(ctx, member, r.o.Timeout); err != nil {
		return err
	}
	if err := r.learner.Promote(ctx, r.o.Timeout); err != nil {
		return err
	}
	r.setAside = false
	if st := r.localStatus(ctx); st != nil {
		r.result.Revision = st.Header.Revision
	}
	r.o.Task.Say("caught up with the restored cluster and promoted to a voting member")
	return nil
}

func rejoinStartPhase(ctx context.Context, r *restoreRun) error {
	var rest []component.Spec
	for _, c := range r.cs {
		if c.Name != master.Etcd {
			rest = append(rest, c)
		}
	}
	if err := r.start(ctx, rest); err != nil {
		return err
	}
	r.stopped = nil
	if err := r.cp.WaitReady(ctx, r.cs, r.o.Timeout); err != nil {
		return err
	}
	if err := r.cp.WaitLeaders(ctx, r.o.Timeout); err != nil {
		return err
	}
	ecli, err := etcd.Dial(ctx, r.o.Root, r.o.Endpoint)
	if err != nil {
		return err
	}
	defer ecli.Close()
	// A member that has just caught up may not have applied the revision
	// the others report yet: that settles within seconds.
	var c *etcd.ConsistencyReport
	for deadline := time.Now().Add(15 * time.Second); ; {
		c, err = etcd.CheckConsistency(ctx, ecli)
		if err == nil && c.Consistent || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	r.result.Consistency = c
	if !c.Consistent {
		return fmt.Errorf("the members of the restored cluster disagree at revision %d: %+v", c.Revision, c.Members)
	}
	r.o.Task.Say("control plane ready; the restored cluster's %d members hold the same data at revision %d", len(c.Members), c.Revision)
	return nil
}

// withdrawLearner removes the learner a failed rejoin added (see
// etcd.Learner).
func (r *restoreRun) withdrawLearner() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	removed, err := r.learner.Withdraw(ctx)
	if err != nil {
		r.log.Error("rollback: cannot remove the etcd learner", "err", err)
	}
	if removed {
		r.o.Task.Say("removed this master's etcd learner from the restored cluster")
	}
}
