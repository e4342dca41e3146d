package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/master"
)

func newUpgradeCmd(a *app) *cobra.Command {
	var root, to, output string
	var rollback, force bool
	cmd := &cobra.Command{
		Use:   "upgrade --to VERSION",
		Short: "Switch this machine to another Kubernetes version, one component at a time",
		Long: `Switch this machine from the Kubernetes version it runs to VERSION, whose
binaries must already be installed beside the old ones (/opt/anvil/bin/VERSION:
'anvil cluster apply' uploads them, or 'anvil images install').

The version skew policy is checked first (one minor up at a time; a downgrade
across minors only with --rollback, to undo an upgrade), and etcd must be
healthy: every member a voter that answers, no alarm. Then the apiserver, the
controller-manager and the scheduler are switched one at a time, each ready
before the next (the VIP goes to another master first), then the kubelet and
kube-proxy, then the agent. etcd must be healthy again and the leader leases
held before the node state names the new version.

On a worker (drain it first: 'anvil cluster apply' does) the kubelet and
kube-proxy are switched, keeping their credentials, then the agent.

anvil itself upgrades the same way: a component whose process runs a binary
replaced since it started (an apply uploaded a new anvil) is restarted, one at
a time, Kubernetes' components first, then anvil's, etcd (healthy before and
after) and the agent last; with the version already running, that is all the
command does.

The old binaries stay: --rollback --to OLD switches back. A run that stopped
half-way is run again; re-running a finished upgrade does nothing. Run it on
one master at a time: 'anvil cluster apply' with the new kubernetesVersion does
that for the whole cluster, masters first, then the workers drained in batches.`,
		Example: `  anvil upgrade --to v1.37.2
  anvil upgrade --to v1.36.3 --rollback
  anvil upgrade --to v1.37.2 --force   # a master is down
  anvil upgrade --to v1.37.2 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return usageError("anvil upgrade needs --to VERSION (anvil images list shows what is built)")
			}
			task, done := a.nodeTask(hostnameOr("upgrade"))
			defer done()
			res, err := upgradeHere(cmd.Context(), hostfs.Root(root), to, rollback, force, a, task)
			if err != nil {
				if res != nil && len(res.Switched) > 0 {
					return fmt.Errorf("%w\n%s already runs %s: %s; run the same command again to finish, or --rollback --to %s to switch back", err, res.Node, res.To, strings.Join(res.Switched, ", "), res.From)
				}
				return err
			}
			return printOutput(a.out, output, res, func() error { return printUpgradeResult(a.out, res) })
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	cmd.Flags().StringVar(&to, "to", "", "Kubernetes version to run, e.g. v1.37.2")
	cmd.Flags().BoolVar(&rollback, "rollback", false, "allow going back one minor, to undo an upgrade")
	cmd.Flags().BoolVar(&force, "force", false, "on a master: go on while some etcd members do not answer (a master down), as long as more than half do")
	addOutputFlag(cmd, &output)
	return cmd
}

// upgradeHere upgrades this machine: a master's control plane and node
// stack, or a worker's node stack.
func upgradeHere(ctx context.Context, root hostfs.Root, to string, rollback, force bool, a *app, task *progress.Task) (*master.UpgradeResult, error) {
	if st, err := master.ReadNodeState(root); err == nil && st.Role == v1alpha1.RoleMaster {
		return master.Upgrade(ctx, master.UpgradeOptions{Root: root, Version: to, Rollback: rollback, Force: force, Log: a.logger(), Task: task})
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	res, err := agent.Upgrade(ctx, agent.UpgradeOptions{Root: root, Version: to, Rollback: rollback, Anvil: self, Log: a.logger(), Task: task})
	if res == nil {
		return nil, err
	}
	return &master.UpgradeResult{Node: res.Node, From: res.From, To: res.To, Switched: res.Switched, Restarted: res.Restarted, Took: res.Took}, err
}

func printUpgradeResult(w io.Writer, res *master.UpgradeResult) error {
	restarted := ""
	if len(res.Restarted) > 0 {
		restarted = fmt.Sprintf("restarted %s, which ran a replaced binary", strings.Join(res.Restarted, ", "))
	}
	switch {
	case res.From == res.To && restarted == "":
		fmt.Fprintf(w, "%s already runs Kubernetes %s and the installed anvil: nothing to do\n", res.Node, res.To)
	case res.From == res.To:
		fmt.Fprintf(w, "%s already runs Kubernetes %s; %s (%s)\n", res.Node, res.To, restarted, res.Took.Round(100*time.Millisecond))
	default:
		if restarted != "" {
			restarted = "; " + restarted
		}
		fmt.Fprintf(w, "%s: Kubernetes %s → %s in %s (switched %s%s)\n", res.Node, res.From, res.To, res.Took.Round(100*time.Millisecond), strings.Join(res.Switched, ", "), restarted)
	}
	return nil
}
