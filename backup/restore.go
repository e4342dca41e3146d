package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/phase"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/master"
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
	// Backup is read twice, start to end, its signature first; Name names
	// it in messages. Only RestoreSnapshot reads a backup.
	Backup io.ReadSeeker
	Name   string
	// Keys decrypt the backup and say whose signature it must carry.
	Keys Keys
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
