package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

func newResetCmd(a *app) *cobra.Command {
	var (
		root                                     string
		force, removeBackups, keep, ignoreQuorum bool
	)
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Stop everything anvil runs here and remove what it wrote",
		Long: `Stops the control plane and the agent in whatever layout they run (the
supervisor, systemd units, static pods), after taking a master's etcd member
out of the cluster (refused if that would break quorum, unless
--ignore-quorum), then removes the units, manifests,
PKI, kubeconfigs, etcd data, /etc/anvil, /var/lib/anvil and the installed
binaries. Local backups in /var/lib/anvil/backups are kept unless
--remove-backups. Asks for confirmation unless --force.

The phases, in order:
` + master.ResetPhaseHelp(),
		Example: `  anvil reset
  anvil reset --force --root /tmp/cp`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := hostfs.Root(root)
			if !force {
				if err := a.confirm("reset", fmt.Sprintf("This stops the control plane and agent under %s and deletes its certificates and etcd data.", r.Path("/"))); err != nil {
					return err
				}
			}
			task, done := a.nodeTask(hostnameOr("reset"))
			res, err := master.Reset(cmd.Context(), master.ResetOptions{
				Root: r, KeepBackups: !removeBackups, KeepBinaries: keep, IgnoreQuorum: ignoreQuorum, Log: a.logger(), Task: task,
			})
			done()
			if res != nil {
				for _, p := range res.Removed {
					fmt.Fprintf(a.out, "removed %s\n", p)
				}
				for _, p := range res.Kept {
					fmt.Fprintf(a.out, "kept    %s\n", p)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&removeBackups, "remove-backups", false, "also delete local backups")
	cmd.Flags().BoolVar(&keep, "keep-binaries", false, "keep the installed binaries in /opt/anvil")
	cmd.Flags().BoolVar(&ignoreQuorum, "ignore-quorum", false, "leave etcd even if the other masters would lose quorum (or cannot be reached)")
	return cmd
}
