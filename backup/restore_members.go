package backup

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"anvil.dev/anvil/etcd"
)

// readMembership is the etcd membership as this master can see it now,
// through its own member first, else through any other master the cluster
// file names; with each member's health. It is nil when no member answers.
// The list is read serializably, so it works without quorum: that is when
// it matters most.
func (r *restoreRun) readMembership(ctx context.Context) []etcd.Member {
	tries := [][]string{nil} // this master's own member
	var others []string
	for _, m := range r.cluster.Masters() {
		if m.Name != r.state.Node {
			others = append(others, "https://"+net.JoinHostPort(m.NodeAddress().String(), strconv.Itoa(etcd.ClientPort)))
		}
	}
	if len(others) > 0 {
		tries = append(tries, others)
	}
	for _, eps := range tries {
		if eps == nil && !localEtcdListens() {
			continue // a member that left, or is down: no need to wait for it
		}
		ms, err := r.listMembers(ctx, eps)
		if err == nil {
			return ms
		}
		r.log.Debug("etcd members", "endpoints", eps, "err", err)
	}
	return nil
}

// localEtcdListens says whether anything accepts connections on this
// master's etcd client port, so that a stopped member costs no client
// timeout.
func localEtcdListens() bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(etcd.ClientPort)), 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (r *restoreRun) listMembers(ctx context.Context, eps []string) ([]etcd.Member, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := etcd.Dial(ctx, r.o.Root, eps...)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	return etcd.ListMembers(ctx, cli)
}

// masterNames are the masters of the cluster file.
func (r *restoreRun) masterNames() []string {
	var out []string
	for _, m := range r.cluster.Masters() {
		out = append(out, m.Name)
	}
	return out
}

// clusterRestoreHint is how to restore several masters without forking.
const clusterRestoreHint = "run anvil cluster restore from the workstation, which restores every master from the same snapshot " +
	"(by hand: anvil restore --leave --force on every other master, anvil restore FILE --force on this one, " +
	"then anvil restore --rejoin https://<this master>:2379 on the others, one at a time)"

// soloRestoreRefusal says why restoring the member self alone must not go
// ahead without --force, or "" when self is the only voting member. ms is
// the membership as readMembership saw it (nil when no member answered);
// masters are the cluster file's.
func soloRestoreRefusal(ms []etcd.Member, self string, masters []string) string {
	if ms == nil {
		others := slices.DeleteFunc(slices.Clone(masters), func(m string) bool { return m == self })
		if len(others) == 0 {
			return ""
		}
		return fmt.Sprintf("no etcd member answers, this master's included, and the cluster file names %d other master(s) (%s): "+
			"if they still hold the cluster, restoring this one alone would fork it, the others going on with the old data. "+
			"Bring them back and %s; pass --force only if this master is the last one left",
			len(others), strings.Join(others, ", "), clusterRestoreHint)
	}
	var voters, healthy, down, others []string
	for _, m := range ms {
		if m.Learner {
			continue
		}
		voters = append(voters, m.Name)
		if m.Healthy {
			healthy = append(healthy, m.Name)
		} else {
			down = append(down, m.Name)
		}
		if m.Name != self {
			others = append(others, m.Name)
		}
	}
	if len(others) == 0 {
		return ""
	}
	if need := etcd.Quorum(len(voters)); len(healthy) < need {
		return fmt.Sprintf("etcd has lost quorum: %d of its %d voting members answer (down: %s) and it needs %d. "+
			"Restoring this member alone turns it into a one-member cluster holding the backup, and the members that are down "+
			"would come back to a cluster that no longer exists. Bring them back and %s; pass --force only if they are gone for good",
			len(healthy), len(voters), strings.Join(down, ", "), need, clusterRestoreHint)
	}
	return fmt.Sprintf("this master's etcd member is one of %d voting members (%d answering; the others: %s): "+
		"restoring it alone would fork the cluster, the others going on with the old data. Instead, %s",
		len(voters), len(healthy), strings.Join(others, ", "), clusterRestoreHint)
}

// leaveRefusal says why stopping the member self must not go ahead without
// --force (etcd would lose its quorum), or "".
func leaveRefusal(ms []etcd.Member, self string) string {
	var voters, rest, down []string
	for _, m := range ms {
		if m.Learner {
			continue
		}
		voters = append(voters, m.Name)
		switch {
		case m.Name == self:
		case m.Healthy:
			rest = append(rest, m.Name)
		default:
			down = append(down, m.Name)
		}
	}
	if !slices.Contains(voters, self) {
		return ""
	}
	need := etcd.Quorum(len(voters))
	if len(rest) >= need {
		return ""
	}
	downText := ""
	if len(down) > 0 {
		downText = " (down already: " + strings.Join(down, ", ") + ")"
	}
	return fmt.Sprintf("stopping this master's etcd member leaves %d of the %d voting members answering%s, and etcd needs %d: "+
		"the cluster would stop serving. A cluster restore does that on purpose, before it restores the first master (pass --force); "+
		"otherwise bring the members that are down back first", len(rest), len(voters), downText, need)
}

// checkEtcdEndpoint accepts an etcd client URL: https, a host and a port,
// nothing else.
func checkEtcdEndpoint(ep string) error {
	u, err := url.Parse(ep)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("etcd endpoint %q: want https://HOST:PORT, the restored master's etcd client URL (https://ADDRESS:%d)", ep, etcd.ClientPort)
	}
	return nil
}
