package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/internal/buildinfo"
)

func newVersionCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print anvil's version",
		Example: "  anvil version\n  anvil version -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildinfo.Get()
			return printOutput(a.out, output, info, func() error {
				_, err := fmt.Fprintf(a.out, "anvil %s (commit %s, built %s, %s, %s)\n",
					info.Version, orUnknown(info.Commit), orUnknown(info.BuildDate), info.GoVersion, info.Platform)
				return err
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
