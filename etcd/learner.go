package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"anvil.dev/anvil/internal/hostfs"
)

// Learner is this machine's member on its way into an existing cluster, the
// one flow by which a member joins: a control-plane join and a master
// rejoining a restored cluster both go through it.
//
//	AddLearner ──► (the caller starts the member) ──► Promote ──► voter
//	     │                       │ failure                 │ failure
//	     └───────────────────────┴──────► Withdraw ◄───────┘
//
// Withdraw removes a learner that was never promoted: etcd allows one
// learner at a time, so a dead one would block the next join.
type Learner struct {
	// Root holds the client certificate the members are reached with.
	Root hostfs.Root
	// Endpoints are client URLs of members already in the cluster.
	Endpoints []string
	// Added is what AddLearner answered: the ID, the initial cluster the
	// member starts with, and a stale member it replaced.
	Added    *AddLearnerResult
	promoted bool
}

// JoinAsLearner adds name at peerURL to the cluster reached through
// endpoints as a learner (see AddLearner: a stale member of the same name
// or peer URL is replaced, and a join that would cost quorum is refused
// unless force).
func JoinAsLearner(ctx context.Context, root hostfs.Root, endpoints []string, name, peerURL string, force bool) (*Learner, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("no etcd member to join through")
	}
	cli, err := Dial(ctx, root, endpoints...)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	res, err := AddLearner(ctx, cli, name, peerURL, force)
	if err != nil {
		return nil, err
	}
	return &Learner{Root: root, Endpoints: endpoints, Added: res}, nil
}

// Promote makes the learner a voter once it has caught up with the leader
// (see PromoteWhenReady), after the caller started it.
func (l *Learner) Promote(ctx context.Context, timeout time.Duration) error {
	cli, err := Dial(ctx, l.Root, l.Endpoints...)
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := PromoteWhenReady(ctx, cli, l.Added.ID, timeout); err != nil {
		return err
	}
	l.promoted = true
	return nil
}

// Promoted reports whether Promote succeeded.
func (l *Learner) Promoted() bool { return l != nil && l.promoted }

// Withdraw removes the learner unless it was promoted, and reports whether
// it removed one. It is safe on a nil *Learner (nothing was added).
func (l *Learner) Withdraw(ctx context.Context) (bool, error) {
	if l == nil || l.Added == nil || l.promoted {
		return false, nil
	}
	cli, err := Dial(ctx, l.Root, l.Endpoints...)
	if err != nil {
		return false, fmt.Errorf("reach etcd to remove the learner: %w", err)
	}
	defer cli.Close()
	if _, err := cli.MemberRemove(ctx, l.Added.ID); err != nil {
		return false, fmt.Errorf("remove the learner %x: %w", l.Added.ID, err)
	}
	return true, nil
}
