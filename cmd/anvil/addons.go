package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

func newAddonsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "addons",
		Short: "Apply the cluster add-ons (cluster DNS) again from this master",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAddonsApplyCmd(a))
	return cmd
}

func newAddonsApplyCmd(a *app) *cobra.Command {
	var (
		root, output string
		dryRun       bool
	)
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Server-side apply the add-ons anvil init deployed, putting back what was changed or deleted",
		Long: `Applies the cluster add-ons this master's cluster file asks for (CoreDNS, the
kube-dns Service, their RBAC and PodDisruptionBudget) again, by server-side
apply under anvil's field manager, exactly as anvil init did: fields anvil
sets are put back, fields anvil does not set (a user's labels, annotations,
extra settings) are kept, and objects that are as anvil wants them are not
written at all. Cluster DNS forwards names outside the cluster to this
machine's resolvers. Then, when two CoreDNS replicas share a node while a
Ready node that could run one runs none (init made them before the
workers joined), one is evicted, honouring the PodDisruptionBudget, and
its replacement is scheduled on another node. It prints each object it
changed and the replica it moved; --dry-run asks the
API server what would change and changes nothing (anvil status shows the
same as add-on drift, and anvil cluster apply runs this when there is any).`,
		Example: `  anvil addons apply --dry-run
  anvil addons apply -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			changed, err := master.ReapplyAddons(cmd.Context(), hostfs.Root(root), dryRun)
			if err != nil {
				return err
			}
			if changed == nil {
				changed = []string{}
			}
			return printOutput(a.out, output, changed, func() error {
				verb := "applied"
				if dryRun {
					verb = "would apply"
				}
				for _, c := range changed {
					fmt.Fprintf(a.out, "%s %s\n", verb, c)
				}
				if len(changed) == 0 {
					fmt.Fprintln(a.out, "the add-ons are as anvil applies them: nothing changed")
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "ask the API server what would change; change nothing")
	addOutputFlag(cmd, &output)
	return cmd
}
