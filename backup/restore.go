package backup

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/internal/phase"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// RestoreMode is what `anvil restore` does on this master.
type RestoreMode string

const (
	// RestoreSnapshot restores this master's etcd member from a backup's
	// snapshot; the member becomes a one-member cluster. A cluster restore
	// does this on its first master.
	RestoreSnapshot RestoreMode = "snapshot"
	// RestoreLeave stops this master's control plane and etcd member and
	// sets the member's data aside, so that the member can rejoin a
	// cluster restored on another master and nothing on this master keeps
	// serving the old data meanwhile.
	RestoreLeave RestoreMode = "leave"
	// RestoreRejoin makes this master a fresh member of the etcd cluster
	// restored on another master (a learner that catches up from it, then
	// a voter) and starts its control plane again: the member never holds
	// data of its own that could mix with the restored snapshot.
	RestoreRejoin RestoreMode = "rejoin"
)

// RestoreOptions are the inputs of `anvil restore`.
type RestoreOptions struct {
	Root hostfs.Root
	// Mode is RestoreSnapshot when empty.
	Mode RestoreMode
	// Backup is read once, start to end; Name names it in messages. Only
	// RestoreSnapshot reads a backup.
	Backup io.Reader
	Name   string
	// Identities decrypt an encrypted backup.
	Identities []age.Identity
	// Endpoint (RestoreRejoin) is an etcd client URL of the restored
	// cluster (https://FIRST-MASTER:2379).
	Endpoint string
	// Force restores a backup whose cluster name or (supported) Kubernetes
	// version differs from this master's, or onto a member of a
	// multi-member etcd cluster, which then becomes a one-member cluster;
	// and lets RestoreLeave and RestoreRejoin change membership although
	// etcd has or would lose quorum.
	Force bool
	// DryRun runs only the checks (for a snapshot restore, the whole
	// verification of the backup too) and changes nothing.
	DryRun bool
	// MinRevision is a revision the restored cluster must end above, on top
	// of what this member served (a cluster restore passes the highest
	// revision any master served).
	MinRevision int64
	// Anvil is this anvil binary, which restarts the process layout's
	// supervisor if it is not running.
	Anvil string
	// Timeout bounds the wait for the control plane to be ready again.
	Timeout time.Duration
	Log     *slog.Logger
	Task    *progress.Task
}

// RestoreResult is what a restore did.
type RestoreResult struct {
	Mode RestoreMode `json:"mode"`
	// DryRun says nothing was changed: the result says what would be.
	DryRun bool   `json:"dryRun,omitempty"`
	Node   string `json:"node"`
	// Header is the backup's (RestoreSnapshot).
	Header *envelope.BackupHeader `json:"header,omitempty"`
	// CACertHash is this master's cluster CA pin (sha256:…).
	CACertHash string `json:"caCertHash,omitempty"`
	// Members is the etcd membership this master saw before it changed
	// anything (empty when no member answered).
	Members []etcd.Member `json:"members,omitempty"`
	// Consistency (RestoreRejoin) compares every member of the restored
	// cluster once this master has rejoined it.
	Consistency *etcd.ConsistencyReport `json:"consistency,omitempty"`
	// SnapshotRevision is the snapshot's own latest revision; ServedRevision
	// the highest this member had served (0 when it could not be read);
	// Revision the restored cluster's, after the bump, marked compacted.
	SnapshotRevision int64  `json:"snapshotRevision"`
	ServedRevision   int64  `json:"servedRevision"`
	RevisionBump     uint64 `json:"revisionBump"`
	Revision         int64  `json:"revision"`
	// Aside holds what the restore replaced: the old etcd data directory
	// and any file the backup's version replaced.
	Aside    string   `json:"aside,omitempty"`
	Replaced []string `json:"replaced,omitempty"`
	// Notes are differences the restore kept as they are.
	Notes []string `json:"notes,omitempty"`
	// Elapsed is the whole restore; Downtime from stopping the apiserver to
	// everything ready again.
	Elapsed  time.Duration `json:"elapsed"`
	Downtime time.Duration `json:"downtime"`
}

// RestoreRefusedError says why a restore refused a backup; nothing had
// been changed.
type RestoreRefusedError struct {
	Backup string
	Reason string
	// Forceable says --force would go ahead.
	Forceable bool
}

func (e *RestoreRefusedError) Error() string {
	s := fmt.Sprintf("refusing to restore %s: %s", e.Backup, e.Reason)
	if e.Forceable {
		s += " (--force restores it anyway)"
	}
	return s
}

// ErrRestoreUnsupported marks a machine restore cannot work on yet.
var ErrRestoreUnsupported = errors.New("restore is not supported here")

// revisionMargin is how far above the highest revision the old member
// served the restored cluster starts. Any positive margin keeps revisions
// from going backwards; a wide one also covers writes that a member other
// than this one may have served (a cluster restore passes MinRevision).
const revisionMargin = 10_000

// unknownRevisionBump is the bump when nothing is known of what the old
// cluster served (its member is gone and its data unreadable): the figure
// etcd's and Kubernetes' restore documentation use.
const unknownRevisionBump = 1_000_000_000

type restorePhase = phase.Phase[*restoreRun]

// restorePhases is the flow of each mode, top to bottom. Until the first
// phase that mutates nothing on the machine has changed; every refusal
// happens before, and a dry run stops there.
func restorePhases(mode RestoreMode) []restorePhase {
	stopControlPlane := restorePhase{Name: "stop-control-plane", Description: "stop kube-scheduler, kube-controller-manager and kube-apiserver", Mutates: true, Run: restoreStopControlPlanePhase}
	stopEtcd := restorePhase{Name: "stop-etcd", Description: "note the last revision etcd served, then stop it", Mutates: true, Run: restoreStopEtcdPhase}
	switch mode {
	case RestoreLeave:
		return []restorePhase{
			{Name: "check", Description: "read this master's state; refuse when stopping its member would cost etcd its quorum", Run: leaveCheckPhase},
			stopControlPlane,
			stopEtcd,
			{Name: "set-aside", Description: "move the member's data aside, so nothing serves the old cluster from here again", Mutates: true, Run: setAsidePhase},
		}
	case RestoreRejoin:
		return []restorePhase{
			{Name: "check", Description: "read this master's state and the restored cluster's members through the endpoint", Run: rejoinCheckPhase},
			stopControlPlane,
			stopEtcd,
			{Name: "set-aside", Description: "move the member's old data aside: it rejoins empty", Mutates: true, Run: setAsidePhase},
			{Name: "etcd-member", Description: "add this master to the restored cluster as a learner (replacing a stale member of the same name)", Mutates: true, Run: rejoinMemberPhase},
			{Name: "etcd", Description: "start the member, wait until it has caught up, promote it to a voter", Mutates: true, Run: rejoinEtcdPhase},
			{Name: "start", Description: "start the control plane and wait until ready", Mutates: true, Run: rejoinStartPhase},
		}
	}
	return []restorePhase{
		{Name: "check", Description: "read this master's state and etcd's membership; refuse to fork a multi-member cluster", Run: restoreCheckPhase},
		{Name: "verify", Description: "decrypt, decompress and verify the whole backup into a staging directory, and check its header", Run: restoreVerifyPhase},
		stopControlPlane,
		stopEtcd,
		{Name: "restore", Description: "restore the snapshot into a fresh data directory (etcd's own code), revision bumped and compacted", Mutates: true, Run: restoreDataPhase},
		{Name: "swap", Description: "put the restored data and the backup's encryption config in place, the old ones aside", Mutates: true, Run: restoreSwapPhase},
		{Name: "start", Description: "start etcd, drop stale leader leases, start the control plane and wait until ready", Mutates: true, Run: restoreStartPhase},
	}
}

// RestorePhaseHelp describes the phases of a restore mode for --help.
func RestorePhaseHelp(mode RestoreMode) string { return phase.Help(restorePhases(mode)) }

type restoreRun struct {
	o       RestoreOptions
	log     *slog.Logger
	started time.Time
	stamp   string

	state    *master.NodeState
	cluster  *v1alpha1.Cluster
	plan     master.Plan
	cp       *master.ControlPlane
	cs       []component.Spec
	etcdCfg  *embed.Config
	dataDir  string
	caHash   string
	lockFile *os.File

	staging      string
	stagedDB     string
	stagedFiles  map[string][]byte
	header       envelope.BackupHeader
	snapRevision int64

	// stopped is what this run stopped, in stop order, for rollback.
	stopped   []component.Spec
	downSince time.Time
	served    int64
	newDir    string
	swapped   bool
	// setAside says the member's data was moved away (leave, rejoin):
	// starting etcd again before it rejoins would make a new, empty cluster.
	setAside bool
	rejoin   rejoinState
	learner  *etcd.Learner
	result   RestoreResult
}

// Restore restores this master. In the default mode (RestoreSnapshot) it
// checks and fully verifies the backup before touching anything, stops the
// control plane and etcd, restores the snapshot into a fresh data
// directory with etcd's own restore code (the revision bumped above
// anything the old cluster served and marked compacted, so every watcher
// relists), swaps it in with the old one kept aside, starts everything
// again and waits until ready. RestoreLeave and RestoreRejoin are the other
// masters' part of a cluster restore.
//
// A restore that fails before stop-control-plane changed nothing; one that
// fails before swap starts the old control plane again.
func Restore(ctx context.Context, o RestoreOptions) (res *RestoreResult, err error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.Mode == "" {
		o.Mode = RestoreSnapshot
	}
	switch o.Mode {
	case RestoreSnapshot:
		if o.Backup == nil {
			return nil, errors.New("restore: no backup to restore")
		}
		if o.Name == "" {
			o.Name = "the backup"
		}
	case RestoreLeave:
	case RestoreRejoin:
		if err := checkEtcdEndpoint(o.Endpoint); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("restore mode %q: use %q, %q or %q", o.Mode, RestoreSnapshot, RestoreLeave, RestoreRejoin)
	}
	now := time.Now().UTC()
	r := &restoreRun{o: o, log: o.Log, started: now, stamp: now.Format("20060102T150405Z")}
	r.result.Mode, r.result.DryRun = o.Mode, o.DryRun
	defer r.cleanup()
	defer func() {
		if err != nil {
			r.rollback(err)
		}
	}()
	if err := phase.Run(ctx, restorePhases(o.Mode), r, phase.Options{Command: "restore", DryRun: o.DryRun, Task: o.Task}); err != nil {
		return nil, err
	}
	r.result.Elapsed = time.Since(r.started)
	if !r.downSince.IsZero() {
		r.result.Downtime = time.Since(r.downSince)
	}
	return &r.result, nil
}

func (r *restoreRun) refuse(forceable bool, format string, args ...any) error {
	name := r.o.Name
	if r.o.Mode != RestoreSnapshot {
		name = "this master"
	}
	return &RestoreRefusedError{Backup: name, Reason: fmt.Sprintf(format, args...), Forceable: forceable}
}

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

func restoreCheckPhase(ctx context.Context, r *restoreRun) error {
	if err := r.readNode(); err != nil {
		return err
	}
	// A member of a multi-member cluster restored alone would fork it.
	ms := r.readMembership(ctx)
	r.result.Members = ms
	if why := soloRestoreRefusal(ms, r.etcdCfg.Name, r.masterNames()); why != "" && !r.o.Force {
		return r.refuse(true, "%s", why)
	}
	return nil
}

// checkHeader refuses, from the clear header alone, a backup this master
// must not take: before any decryption and before anything changes.
func (r *restoreRun) checkHeader(h *envelope.BackupHeader) error {
	if _, err := images.Lookup(h.KubernetesVersion); err != nil {
		return r.refuse(false, "it is of Kubernetes %s, which this anvil cannot run: %v", h.KubernetesVersion, err)
	}
	if h.Cluster != r.cluster.Name && !r.o.Force {
		return r.refuse(true, "it is a backup of cluster %q, and this master belongs to cluster %q", h.Cluster, r.cluster.Name)
	}
	if h.KubernetesVersion != r.state.KubernetesVersion && !r.o.Force {
		return r.refuse(true, "it was taken under Kubernetes %s and this master runs %s", h.KubernetesVersion, r.state.KubernetesVersion)
	}
	if h.CACertHash != r.caHash {
		return r.refuse(false, "its cluster CA (%s) is not this master's (%s): its certificates, service-account tokens and Secrets belong to another cluster (or the CA was replaced). Restore it onto a machine cleaned with anvil reset and initialised from the backup's cluster file", h.CACertHash, r.caHash)
	}
	return nil
}

func restoreVerifyPhase(ctx context.Context, r *restoreRun) error {
	parent := filepath.Dir(r.dataDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return err
	}
	staging, err := os.MkdirTemp(parent, "restore-staging-")
	if err != nil {
		return err
	}
	r.staging = staging
	r.stagedDB = filepath.Join(staging, "snapshot.db")
	db, err := os.OpenFile(r.stagedDB, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer db.Close()
	trailer := envelope.NewSnapshotTrailer()
	r.stagedFiles = map[string][]byte{}
	contents, err := envelope.ReadEnvelope(r.o.Backup, envelope.ReadOptions{
		Identities:  r.o.Identities,
		CheckHeader: r.checkHeader,
		File: func(p string, _ fs.FileMode, data []byte) error {
			r.stagedFiles["/"+p] = data
			return nil
		},
		Snapshot: io.MultiWriter(db, trailer),
	})
	if err != nil {
		var refused *RestoreRefusedError
		if errors.As(err, &refused) {
			return err
		}
		return fmt.Errorf("%s: %w", r.o.Name, err)
	}
	if err := db.Sync(); err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	r.header = contents.Header
	r.result.Header = &r.header
	if err := trailer.Check(); err != nil {
		return fmt.Errorf("%s: %w", r.o.Name, envelope.NewError(envelope.ErrCorruptBackup, "snapshot", "%v", err))
	}
	for _, f := range BackupFiles() {
		if _, ok := r.stagedFiles[f]; !ok {
			return fmt.Errorf("%s: %w", r.o.Name, envelope.NewError(envelope.ErrCorruptBackup, "file", "%s is missing", f))
		}
	}
	// The CA inside (authenticated when encrypted) must be the one the
	// clear header named.
	ca := r.stagedFiles[path.Join(hostfs.PKIDir, pki.CertFile(pki.CACertAndKeyBaseName))]
	if h, err := caHashOfPEM(ca); err != nil || h != contents.Header.CACertHash {
		return fmt.Errorf("%s: %w", r.o.Name, envelope.NewError(envelope.ErrCorruptBackup, "file", "the CA inside does not match the header's %s (%s, %v)", contents.Header.CACertHash, h, err))
	}
	if err := r.checkFiles(); err != nil {
		return err
	}
	if r.snapRevision, err = dbRevision(r.stagedDB, time.Second); err != nil {
		return fmt.Errorf("%s: %w", r.o.Name, envelope.NewError(envelope.ErrCorruptBackup, "snapshot", "the snapshot is not an etcd database: %v", err))
	}
	r.result.SnapshotRevision = r.snapRevision
	r.o.Task.Say("%s is a complete backup of cluster %s taken on %s at %s, revision %d (snapshot %s, sha256 %s…)",
		r.o.Name, contents.Header.Cluster, contents.Header.Node, contents.Header.Created.Format(time.RFC3339), r.snapRevision,
		human.Bytes(contents.SnapshotSize), contents.SnapshotSHA256[:16])
	if r.o.DryRun {
		// What the restore would do if the cluster stopped now.
		r.result.ServedRevision = r.liveRevision(ctx)
		bump := revisionBump(r.snapRevision, r.result.ServedRevision, r.o.MinRevision)
		r.result.RevisionBump, r.result.Revision = bump, r.snapRevision+int64(bump)
	}
	return nil
}

// checkFiles compares the backup's files with this master's: the CAs and
// the service-account keys must be the same (everything here was issued
// from them), the encryption config is replaced by the backup's if it
// differs (the snapshot's Secrets are encrypted with it), and a different
// cluster file is kept and noted.
func (r *restoreRun) checkFiles() error {
	for _, f := range BackupFiles() {
		want := r.stagedFiles[f]
		have, err := os.ReadFile(r.o.Root.Path(f))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err == nil && bytes.Equal(have, want) {
			continue
		}
		switch f {
		case master.EncryptionConfigFile:
			if err := master.CheckEncryptionConfig(want); err != nil {
				return fmt.Errorf("%s: %w", r.o.Name, envelope.NewError(envelope.ErrCorruptBackup, "file", "%s: %v", f, err))
			}
		case master.ClusterFile:
			r.result.Notes = append(r.result.Notes, fmt.Sprintf("the backup's cluster file differs from %s, which is kept", r.o.Root.Path(f)))
		default:
			return r.refuse(false, "its %s differs from this master's: restore it onto a machine cleaned with anvil reset", f)
		}
	}
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

func (r *restoreRun) liveRevision(ctx context.Context) int64 {
	if !localEtcdListens() {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := etcd.Dial(ctx, r.o.Root)
	if err != nil {
		return 0
	}
	defer cli.Close()
	sr, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		r.log.Warn("cannot read etcd's revision before stopping it", "err", err)
		return 0
	}
	return sr.Header.Revision
}

// revisionBump is how far the snapshot's revision is raised: above the
// highest revision served (by this member, or MinRevision) by a margin;
// by a billion when nothing is known.
func revisionBump(snapRev, served, floor int64) uint64 {
	served = max(served, floor)
	if served <= 0 {
		return unknownRevisionBump
	}
	return uint64(max(served-snapRev, 0) + revisionMargin)
}

func restoreDataPhase(ctx context.Context, r *restoreRun) error {
	bump := revisionBump(r.snapRevision, r.served, r.o.MinRevision)
	r.result.RevisionBump = bump
	r.result.Revision = r.snapRevision + int64(bump)
	r.newDir = filepath.Join(filepath.Dir(r.dataDir), filepath.Base(r.dataDir)+".restore-"+r.stamp)
	var peers []string
	for _, u := range r.etcdCfg.AdvertisePeerUrls {
		peers = append(peers, u.String())
	}
	var initial []string
	for _, u := range peers {
		initial = append(initial, r.etcdCfg.Name+"="+u)
	}
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        r.stagedDB,
		Name:                r.etcdCfg.Name,
		OutputDataDir:       r.newDir,
		PeerURLs:            peers,
		InitialCluster:      strings.Join(initial, ","),
		InitialClusterToken: r.etcdCfg.InitialClusterToken,
		RevisionBump:        bump,
		MarkCompacted:       true,
	})
	if err != nil {
		return fmt.Errorf("etcd snapshot restore into %s: %w", r.newDir, err)
	}
	if err := os.Chmod(r.newDir, 0o700); err != nil {
		return err
	}
	r.o.Task.Say("revision %d bumped by %d to %d (this member had served up to %d), marked compacted",
		r.snapRevision, bump, r.result.Revision, r.served)
	return nil
}

func restoreSwapPhase(ctx context.Context, r *restoreRun) error {
	aside := filepath.Join(filepath.Dir(r.dataDir), "before-restore-"+r.stamp)
	if err := os.Mkdir(aside, 0o700); err != nil {
		return err
	}
	r.result.Aside = aside
	oldData := filepath.Join(aside, filepath.Base(r.dataDir))
	if err := os.Rename(r.dataDir, oldData); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("move %s aside: %w", r.dataDir, err)
	}
	if err := os.Rename(r.newDir, r.dataDir); err != nil {
		if rerr := os.Rename(oldData, r.dataDir); rerr != nil {
			return fmt.Errorf("put the restored data in place: %w; and the old data could not be put back from %s: %v", err, oldData, rerr)
		}
		return fmt.Errorf("put the restored data in place: %w", err)
	}
	r.swapped = true
	r.newDir = ""
	// The encryption config the snapshot's Secrets need.
	f := master.EncryptionConfigFile
	want := r.stagedFiles[f]
	have, err := os.ReadFile(r.o.Root.Path(f))
	if err == nil && !bytes.Equal(have, want) {
		if err := fsutil.WriteFile(filepath.Join(aside, "files", f), have, 0o600, 0o700); err != nil {
			return err
		}
	}
	if err != nil || !bytes.Equal(have, want) {
		if err := fsutil.WriteFile(r.o.Root.Path(f), want, backupFileMode(f), 0o700); err != nil {
			return err
		}
		r.result.Replaced = append(r.result.Replaced, r.o.Root.Path(f))
	}
	return nil
}

func restoreStartPhase(ctx context.Context, r *restoreRun) error {
	member := r.components(master.Etcd)
	if err := r.start(ctx, member); err != nil {
		return err
	}
	if err := r.cp.WaitReady(ctx, member, r.o.Timeout); err != nil {
		return err
	}
	if err := r.dropLeaderLeases(ctx); err != nil {
		return err
	}
	var rest []component.Spec
	for _, c := range r.stopped {
		if c.Name != master.Etcd {
			rest = append(rest, c)
		}
	}
	if err := r.start(ctx, rest); err != nil {
		return err
	}
	if err := r.cp.WaitReady(ctx, r.cs, r.o.Timeout); err != nil {
		return err
	}
	if err := r.cp.WaitLeaders(ctx, r.o.Timeout); err != nil {
		return err
	}
	r.o.Task.Say("control plane ready after %s down; the old data is in %s", time.Since(r.downSince).Round(10*time.Millisecond), r.result.Aside)
	return nil
}

// dropLeaderLeases deletes the controller-manager's, the scheduler's and
// the VIP's leader leases from the restored data. They name holders from the time of
// the backup, and a new holder would wait out their whole duration; every
// holder is stopped during a restore, so nobody can still be acting on them.
func (r *restoreRun) dropLeaderLeases(ctx context.Context) error {
	prefix := "/registry"
	for _, c := range r.cs {
		if v, ok := c.Arg("etcd-prefix"); ok && c.Name == master.APIServer {
			prefix = v
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cli, err := etcd.Dial(ctx, r.o.Root)
	if err != nil {
		return err
	}
	defer cli.Close()
	for _, name := range []string{master.ControllerManager, master.Scheduler, master.VIPLease} {
		key := path.Join(prefix, "leases", "kube-system", name)
		if _, err := cli.Delete(ctx, key); err != nil {
			return fmt.Errorf("delete stale leader lease %s: %w", key, err)
		}
	}
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

// dbRevision is the newest revision in an etcd database file (bbolt):
// the last key of the "key" bucket, whose first 8 bytes are the main
// revision, big-endian. Opening waits up to timeout for a writer's lock.
func dbRevision(file string, timeout time.Duration) (int64, error) {
	if _, err := os.Stat(file); err != nil {
		return 0, err
	}
	db, err := bolt.Open(file, 0o400, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", file, err)
	}
	defer db.Close()
	var rev int64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return fmt.Errorf("%s has no key bucket", file)
		}
		k, _ := b.Cursor().Last()
		if len(k) < 8 {
			return fmt.Errorf("%s has no revisions", file)
		}
		rev = int64(binary.BigEndian.Uint64(k[:8]))
		return nil
	})
	return rev, err
}

// caHashOfPEM is the CA pin of a PEM certificate.
func caHashOfPEM(b []byte) (string, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", err
	}
	return pki.CAHashOf(cert).String(), nil
}
