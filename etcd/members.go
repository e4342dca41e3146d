package etcd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member is an etcd member as anvil reasons about it.
type Member struct {
	Name       string   `json:"name"`
	ID         uint64   `json:"-"`
	IDHex      string   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	Learner    bool     `json:"learner"`
	// Healthy means the member answered a status request just now.
	Healthy bool `json:"healthy"`
	Leader  bool `json:"leader"`
	// Revision and RaftIndex are the member's, when it answered.
	Revision  int64  `json:"revision,omitempty"`
	RaftIndex uint64 `json:"raftIndex,omitempty"`
}

// Quorum is how many voting members a cluster of n voters needs up.
func Quorum(n int) int { return n/2 + 1 }

// QuorumError says a membership change would leave (or finds) etcd without
// a majority, with the numbers an operator needs.
type QuorumError struct {
	Change  string
	Healthy int
	Voters  int
	Needed  int
	Down    []string
}

func (e *QuorumError) Error() string {
	return fmt.Sprintf("refusing to %s: %d of %d etcd voting members are healthy and etcd needs %d for quorum (down: %s); bring members back first, or pass --force if they are gone for good",
		e.Change, e.Healthy, e.Voters, e.Needed, strings.Join(e.Down, ", "))
}

// ListMembers returns the members and, for each, whether it answers now.
func ListMembers(ctx context.Context, cli *clientv3.Client) ([]Member, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Serializable: a linearizable list needs the quorum this may be
	// checking for.
	ml, err := cli.MemberList(lctx, clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("etcd member list: %w", err)
	}
	out := make([]Member, len(ml.Members))
	var wg sync.WaitGroup
	for i, m := range ml.Members {
		out[i] = Member{Name: m.Name, ID: m.ID, IDHex: fmt.Sprintf("%x", m.ID), PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner}
		if len(m.ClientURLs) == 0 {
			continue // a learner that has not started yet
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			st, err := cli.Status(sctx, m.ClientURLs[0])
			if err != nil {
				return
			}
			out[i].Healthy = true
			out[i].Leader = st.Leader == m.ID
			out[i].Revision, out[i].RaftIndex = st.Header.Revision, st.RaftIndex
		}()
	}
	wg.Wait()
	return out, nil
}

// MemberHash is one member's HashKV at a revision.
type MemberHash struct {
	Name     string `json:"name"`
	Revision int64  `json:"revision"`
	Hash     uint32 `json:"hash"`
	// CompactRevision is the member's compaction point; hashes compare
	// only between members compacted at the same revision.
	CompactRevision int64  `json:"compactRevision"`
	Error           string `json:"error,omitempty"`
}

// ConsistencyReport is `anvil etcd check`: every member's key-value hash at
// one revision that all of them have applied.
type ConsistencyReport struct {
	Revision   int64        `json:"revision"`
	Members    []MemberHash `json:"members"`
	Consistent bool         `json:"consistent"`
}

// CheckConsistency hashes every started member's key space at the lowest
// revision all of them report (so that a member still catching up is
// compared on what it has), and says whether the hashes agree. A member
// that does not answer makes the report inconsistent.
func CheckConsistency(ctx context.Context, cli *clientv3.Client) (*ConsistencyReport, error) {
	ms, err := ListMembers(ctx, cli)
	if err != nil {
		return nil, err
	}
	rep := &ConsistencyReport{}
	for _, m := range ms {
		if len(m.ClientURLs) == 0 {
			continue
		}
		if !m.Healthy {
			rep.Members = append(rep.Members, MemberHash{Name: m.Name, Error: "does not answer"})
			continue
		}
		if rep.Revision == 0 || m.Revision < rep.Revision {
			rep.Revision = m.Revision
		}
		rep.Members = append(rep.Members, MemberHash{Name: m.Name})
	}
	if rep.Revision == 0 {
		return nil, errors.New("no etcd member answers")
	}
	urls := map[string]string{}
	for _, m := range ms {
		if len(m.ClientURLs) > 0 {
			urls[m.Name] = m.ClientURLs[0]
		}
	}
	var wg sync.WaitGroup
	for i := range rep.Members {
		h := &rep.Members[i]
		if h.Error != "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			r, err := cli.HashKV(hctx, urls[h.Name], rep.Revision)
			if err != nil {
				h.Error = err.Error()
				return
			}
			h.Revision, h.Hash, h.CompactRevision = rep.Revision, r.Hash, r.CompactRevision
		}()
	}
	wg.Wait()
	rep.Consistent = true
	for _, h := range rep.Members {
		first := rep.Members[0]
		if h.Error != "" || h.Hash != first.Hash || h.CompactRevision != first.CompactRevision {
			rep.Consistent = false
		}
	}
	return rep, nil
}

// voters counts voting members and the healthy ones among them.
func voters(ms []Member) (all, healthy int, down []string) {
	for _, m := range ms {
		if m.Learner {
			continue
		}
		all++
		if m.Healthy {
			healthy++
		} else {
			down = append(down, m.Name)
		}
	}
	return all, healthy, down
}

// AddLearnerResult is what a joining member needs to start.
type AddLearnerResult struct {
	ID uint64
	// InitialCluster lists every member (name=peerURL), this one included,
	// for the new member's initial-cluster.
	InitialCluster []Peer
	// Replaced names a stale member of the same name or peer URL that was
	// removed first.
	Replaced string
}

// AddLearner adds name at peerURL as a learner, after removing a stale
// member with the same name or peer URL (a join that died half-way, or a
// machine reinstalled). A learner takes no part in quorum, so it is safe
// to add; promoting it later is what changes quorum, and that is checked
// here already, so a join fails before it changes anything.
func AddLearner(ctx context.Context, cli *clientv3.Client, name, peerURL string, force bool) (*AddLearnerResult, error) {
	ms, err := ListMembers(ctx, cli)
	if err != nil {
		return nil, err
	}
	res := &AddLearnerResult{}
	var stale []Member
	var rest []Member
	for _, m := range ms {
		if m.Name == name || slices.Contains(m.PeerURLs, peerURL) || (m.Name == "" && slices.Contains(m.PeerURLs, peerURL)) {
			stale = append(stale, m)
		} else {
			rest = append(rest, m)
		}
	}
	all, healthy, down := voters(rest)
	// After the join, the voters are the rest plus this one, which will
	// be healthy when it is promoted.
	if need := Quorum(all + 1); healthy+1 < need && !force {
		return nil, &QuorumError{Change: "add etcd member " + name, Healthy: healthy, Voters: all, Needed: need, Down: down}
	}
	if all > 0 && healthy < Quorum(all) && !force {
		return nil, &QuorumError{Change: "add etcd member " + name, Healthy: healthy, Voters: all, Needed: Quorum(all), Down: down}
	}
	for _, m := range stale {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.MemberRemove(rctx, m.ID)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("remove stale etcd member %s (%x): %w", m.Name, m.ID, err)
		}
		res.Replaced = m.Name
		if res.Replaced == "" {
			res.Replaced = fmt.Sprintf("%x", m.ID)
		}
	}
	if len(stale) > 0 {
		// etcd derives a member ID from its peer URLs and the time in whole
		// seconds; re-adding the URL just removed within the same second
		// would get the removed ID back, which etcd refuses for good.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
	}
	var added *clientv3.MemberAddResponse
	err = whileUnhealthy(ctx, 30*time.Second, func(ctx context.Context) error {
		var err error
		added, err = cli.MemberAddAsLearner(ctx, []string{peerURL})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("add etcd learner %s at %s: %w", name, peerURL, err)
	}
	res.ID = added.Member.ID
	for _, m := range added.Members {
		n := m.Name
		if m.ID == added.Member.ID {
			n = name
		}
		if n == "" {
			continue // another learner that never started; it is not ours to name
		}
		for _, u := range m.PeerURLs {
			res.InitialCluster = append(res.InitialCluster, Peer{Name: n, PeerURL: u})
		}
	}
	return res, nil
}

// PromoteWhenReady promotes learner id to a voting member as soon as it
// has caught up with the leader (etcd refuses until then), or fails after
// timeout.
func PromoteWhenReady(ctx context.Context, cli *clientv3.Client, id uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cli.MemberPromote(pctx, id)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, rpctypes.ErrMemberNotLearner) {
			return nil // a re-run after the promotion went through
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("etcd learner %x did not catch up within %s: %w", id, timeout, last)
}

// ErrNoSuchMember means no member has that name.
var ErrNoSuchMember = errors.New("no etcd member has that name")

// RemoveMember removes the member called name, refusing when the cluster
// would lose quorum unless force.
func RemoveMember(ctx context.Context, cli *clientv3.Client, name string, force bool) (Member, error) {
	ms, err := ListMembers(ctx, cli)
	if err != nil {
		return Member{}, err
	}
	i := slices.IndexFunc(ms, func(m Member) bool { return m.Name == name || m.IDHex == name })
	if i < 0 {
		return Member{}, fmt.Errorf("%w: %q (members: %s)", ErrNoSuchMember, name, memberNames(ms))
	}
	target := ms[i]
	if !target.Learner {
		rest := slices.Delete(slices.Clone(ms), i, i+1)
		all, healthy, down := voters(rest)
		if all > 0 && healthy < Quorum(all) && !force {
			return target, &QuorumError{Change: "remove etcd member " + target.Name, Healthy: healthy, Voters: all, Needed: Quorum(all), Down: down}
		}
	}
	// A member stops as soon as it applies its own removal, often before
	// it answers ("etcdserver: server stopped"): ask the others.
	var others []string
	for _, m := range ms {
		if m.ID != target.ID {
			others = append(others, m.ClientURLs...)
		}
	}
	if len(others) > 0 {
		orig := cli.Endpoints()
		cli.SetEndpoints(others...)
		defer cli.SetEndpoints(orig...)
	}
	err = whileUnhealthy(ctx, 15*time.Second, func(ctx context.Context) error {
		_, err := cli.MemberRemove(ctx, target.ID)
		return err
	})
	if err != nil {
		// The answer may have been lost with the member: it is gone if
		// the others no longer list it.
		if after, lerr := ListMembers(ctx, cli); lerr == nil && !slices.ContainsFunc(after, func(m Member) bool { return m.ID == target.ID }) {
			return target, nil
		}
		return target, fmt.Errorf("remove etcd member %s: %w", target.Name, err)
	}
	return target, nil
}

// whileUnhealthy runs a membership change, again while etcd refuses it as
// an "unhealthy cluster": etcd calls itself so for a few seconds after any
// member (re)connects (a join just done, a member restarted), and that
// passes. Each try is bounded; after within, or on any other answer, the
// last error is returned.
func whileUnhealthy(ctx context.Context, within time.Duration, change func(context.Context) error) error {
	deadline := time.Now().Add(within)
	for {
		tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := change(tctx)
		cancel()
		if !errors.Is(err, rpctypes.ErrUnhealthy) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func memberNames(ms []Member) string {
	var n []string
	for _, m := range ms {
		n = append(n, m.Name)
	}
	return strings.Join(n, ", ")
}

// CheckHealthy says why the cluster is not fit for a change one member at
// a time (an upgrade): a member that does not answer, a learner not yet
// promoted, or an alarm (NOSPACE, CORRUPT) raised. Nil when every member
// is a healthy voter and no alarm is raised.
func CheckHealthy(ctx context.Context, cli *clientv3.Client) error {
	return checkHealthy(ctx, cli, false)
}

// CheckQuorate is CheckHealthy that tolerates members that do not answer
// as long as more than half of them do: what anvil upgrade --force asks
// of a cluster with a master down.
func CheckQuorate(ctx context.Context, cli *clientv3.Client) error {
	return checkHealthy(ctx, cli, true)
}

// unanswered is what members that do not answer (down, of total) make
// wrong: everything, unless tolerated while more than half answer.
func unanswered(total int, down []string, tolerate bool) []string {
	if tolerate && 2*(total-len(down)) > total {
		return nil
	}
	return down
}

func checkHealthy(ctx context.Context, cli *clientv3.Client, tolerateDown bool) error {
	ms, err := ListMembers(ctx, cli)
	if err != nil {
		return err
	}
	var problems, down []string
	for _, m := range ms {
		switch {
		case m.Learner:
			problems = append(problems, fmt.Sprintf("member %s is a learner not yet promoted", m.Name))
		case !m.Healthy:
			down = append(down, fmt.Sprintf("member %s does not answer", cmp.Or(m.Name, m.IDHex)))
		}
	}
	problems = append(problems, unanswered(len(ms), down, tolerateDown)...)
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	alarms, err := cli.AlarmList(actx)
	if err != nil {
		return fmt.Errorf("etcd alarm list: %w", err)
	}
	for _, a := range alarms.Alarms {
		name := fmt.Sprintf("%x", a.MemberID)
		for _, m := range ms {
			if m.ID == a.MemberID {
				name = m.Name
			}
		}
		problems = append(problems, fmt.Sprintf("alarm %s raised on member %s", a.Alarm, name))
	}
	if len(problems) > 0 {
		return fmt.Errorf("etcd (%d members) is not healthy: %s", len(ms), strings.Join(problems, "; "))
	}
	return nil
}
