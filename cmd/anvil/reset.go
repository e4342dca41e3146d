package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

func newResetCmd(a *app) *cobra.Command {
	var (
		root                                             string
		force, removeBackups, keep, ignoreQuorum, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Stop everything anvil runs here and remove what it wrote",
		Long: `Stops the control plane and the agent in whatever layout they run (the
supervisor, systemd units, static pods), after taking a master's etcd member
out of the cluster (refused if that would break quorum, unless
--ignore-quorum), then removes the units, manifests,
PKI, kubeconfigs, etcd data, /etc/anvil, /var/lib/anvil and the installed
binaries. On a node that runs pods it first removes every pod, stops the
kubelet and containerd, unmounts what is mounted in their directories and
removes the pod network and their files. --dry-run lists all of it and
changes nothing. Local backups in /var/lib/anvil/backups are kept unless
--remove-backups. Asks for confirmation unless --force.

The phases, in order:
` + master.ResetPhaseHelp(),
		Example: `  anvil reset
  anvil reset --force --root /tmp/cp`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := hostfs.Root(root)
			if !force && !dryRun {
				if err := a.confirm("reset", fmt.Sprintf("This stops the control plane and agent under %s and deletes its certificates and etcd data.", r.Path("/"))); err != nil {
					return err
				}
			}
			task, done := a.nodeTask(hostnameOr("reset"))
			res, err := master.Reset(cmd.Context(), master.ResetOptions{
				Root: r, KeepBackups: !removeBackups, KeepBinaries: keep, IgnoreQuorum: ignoreQuorum, DryRun: dryRun, Log: a.logger(), Task: task,
			})
			done()
			if res != nil {
				verbs := [4]string{"stopped", "unmounted", "removed", "kept   "}
				if dryRun {
					verbs = [4]string{"would stop", "would unmount", "would remove", "would keep"}
				}
				for i, list := range [][]string{res.Stopped, res.Unmounted, res.Removed, res.Kept} {
					for _, p := range list {
						fmt.Fprintf(a.out, "%s %s\n", verbs[i], p)
					}
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&removeBackups, "remove-backups", false, "also delete local backups")
	cmd.Flags().BoolVar(&keep, "keep-binaries", false, "keep what an upload installed: the binaries in /opt/anvil and the image archives in /var/lib/anvil/images")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what reset would stop, unmount and remove; change nothing")
	cmd.Flags().BoolVar(&ignoreQuorum, "ignore-quorum", false, "leave etcd even if the other masters would lose quorum (or cannot be reached)")
	return cmd
}
