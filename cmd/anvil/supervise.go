package main

import (
	"github.com/spf13/cobra"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/supervise"
)

func newSuperviseCmd(a *app) *cobra.Command {
	var root string
	o := supervise.Options{}
	cmd := &cobra.Command{
		Use:   "supervise",
		Short: "Run the process layout's supervisor (started by init and join)",
		Long: `Runs the components whose process specs are in /etc/anvil/processes, restarts
them with backoff, and stops them in reverse order on SIGTERM. SIGHUP rescans
the specs. 'anvil init --layout process' and 'anvil join --layout process'
start it detached; 'anvil reset' stops it.`,
		Example: `  anvil supervise --root /`,
		Hidden:  true,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Root, o.Log = hostfs.Root(root), a.logger()
			return supervise.Run(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&root, "root", "/", "runtime root of the process specs and state")
	cmd.Flags().DurationVar(&o.StopTimeout, "stop-timeout", 0, "how long a process gets after SIGTERM before SIGKILL (default 15s)")
	return cmd
}
