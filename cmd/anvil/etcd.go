package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/hostfs"
)

func newEtcdCmd(a *app) *cobra.Command {
	o := etcd.ServerOptions{}
	cmd := &cobra.Command{
		Use:   "etcd --config FILE",
		Short: "Run this master's embedded etcd member",
		Long: `Runs etcd embedded in anvil, configured by an etcd configuration file in etcd's
own keys (written by 'anvil init' or 'anvil render'). Clients and peers must
present certificates from the etcd CA. Under systemd it reports READY once
the member serves and pings the watchdog while it is healthy; SIGTERM stops
it cleanly.`,
		Example: `  anvil etcd --config /etc/anvil/etcd.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.ConfigFile == "" {
				return usageError("anvil etcd needs --config FILE")
			}
			o.Log = a.logger()
			return etcd.Serve(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.ConfigFile, "config", "/etc/anvil/etcd.yaml", "etcd configuration file (etcd's own keys)")
	cmd.Flags().DurationVar(&o.ReadyTimeout, "ready-timeout", 2*time.Minute, "how long to wait for the member to join its cluster and serve")
	cmd.AddCommand(newEtcdMembersCmd(a), newEtcdRemoveCmd(a), newEtcdCheckCmd(a))
	return cmd
}

// etcdClientFlags say which members to talk to, with this master's
// healthcheck client certificate.
type etcdClientFlags struct {
	root      string
	endpoints []string
}

func (f *etcdClientFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.root, "root", "", "prefix for every host path")
	cmd.Flags().StringSliceVar(&f.endpoints, "endpoints", nil, "etcd client URLs (default: this master's member)")
}

func (f *etcdClientFlags) client(cmd *cobra.Command) (*clientv3.Client, error) {
	return etcd.Dial(cmd.Context(), hostfs.Root(f.root), f.endpoints...)
}

// with runs fn with a client of the members, closed afterwards.
func (f *etcdClientFlags) with(cmd *cobra.Command, fn func(*clientv3.Client) error) error {
	cli, err := f.client(cmd)
	if err != nil {
		return err
	}
	defer cli.Close()
	return fn(cli)
}

func newEtcdMembersCmd(a *app) *cobra.Command {
	var f etcdClientFlags
	var output string
	cmd := &cobra.Command{
		Use:     "members",
		Short:   "List the etcd members and whether each answers",
		Example: "  anvil etcd members\n  anvil etcd members -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.with(cmd, func(cli *clientv3.Client) error {
				ms, err := etcd.ListMembers(cmd.Context(), cli)
				if err != nil {
					return err
				}
				return printOutput(a.out, output, ms, func() error {
					tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tID\tHEALTHY\tLEADER\tLEARNER\tREVISION\tPEER URLS")
					for _, m := range ms {
						fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%v\t%d\t%s\n", orDash(m.Name), m.IDHex, m.Healthy, m.Leader, m.Learner, m.Revision, strings.Join(m.PeerURLs, ","))
					}
					return tw.Flush()
				})
			})
		},
	}
	f.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func newEtcdCheckCmd(a *app) *cobra.Command {
	var f etcdClientFlags
	var output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that every etcd member holds the same data",
		Long: `Hashes every member's key space (HashKV) at the lowest revision all of them
have applied and compares the hashes. Exits non-zero when a member does not
answer or its hash differs: after a partition heals, a member that diverged
shows here.`,
		Example: "  anvil etcd check\n  anvil etcd check -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep *etcd.ConsistencyReport
			err := f.with(cmd, func(cli *clientv3.Client) (err error) {
				rep, err = etcd.CheckConsistency(cmd.Context(), cli)
				return err
			})
			if err != nil {
				return err
			}
			err = printOutput(a.out, output, rep, func() error {
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tREVISION\tCOMPACTED\tHASH\tERROR")
				for _, h := range rep.Members {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%08x\t%s\n", orDash(h.Name), h.Revision, h.CompactRevision, h.Hash, orDash(h.Error))
				}
				return tw.Flush()
			})
			if err != nil {
				return err
			}
			if !rep.Consistent {
				return fmt.Errorf("etcd members disagree at revision %d", rep.Revision)
			}
			return nil
		},
	}
	f.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func newEtcdRemoveCmd(a *app) *cobra.Command {
	var f etcdClientFlags
	var force bool
	cmd := &cobra.Command{
		Use:   "remove NAME|ID",
		Short: "Remove an etcd member (a master that is gone for good)",
		Long: `Removes a member from etcd. anvil reset does this for its own member; use this
for a master that died and will not come back. Refused when the remaining
members would not have quorum, unless --force.`,
		Example: "  anvil etcd remove m3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.with(cmd, func(cli *clientv3.Client) error {
				m, err := etcd.RemoveMember(cmd.Context(), cli, args[0], force)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "removed etcd member %s (%s)\n", m.Name, m.IDHex)
				return nil
			})
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "remove even if the remaining members lack quorum")
	return cmd
}
