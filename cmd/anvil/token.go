package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

func newTokenCmd(a *app) *cobra.Command {
	var root, kubeconfig string
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and delete the bootstrap tokens nodes join with",
	}
	cmd.PersistentFlags().StringVar(&root, "root", "", "prefix for every host path")
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "admin kubeconfig (default /etc/kubernetes/admin.conf)")

	var ttl time.Duration
	var description string
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a bootstrap token and print it on stdout",
		Long: `Makes a bootstrap token (24h by default) and signs cluster-info for it, so a
node can join with it at once. Only the token is printed, on stdout, so a
script can pass it on without it reaching a log or a command line:

  anvil token create | ssh node 'anvil join https://EP:6443 --token-file - --ca-cert-hash sha256:H'`,
		Example: "  anvil token create\n  anvil token create --ttl 1h --description 'rack 4'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := adminClient(hostfs.Root(root), kubeconfig)
			if err != nil {
				return err
			}
			tok, err := master.CreateToken(cmd.Context(), cs, ttl, description, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(a.out, tok.Reveal())
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid (0: forever, which is not wise)")
	create.Flags().StringVar(&description, "description", "made by anvil token create", "what the token is for")

	var output string
	list := &cobra.Command{
		Use:     "list",
		Short:   "List bootstrap tokens (never their secrets)",
		Example: "  anvil token list\n  anvil token list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := adminClient(hostfs.Root(root), kubeconfig)
			if err != nil {
				return err
			}
			ts, err := master.ListTokens(cmd.Context(), cs, time.Now())
			if err != nil {
				return err
			}
			return printOutput(a.out, output, ts, func() error {
				tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tTTL\tEXPIRES\tUSAGES\tDESCRIPTION")
				for _, t := range ts {
					ttl, exp := "<forever>", "<never>"
					if !t.Expires.IsZero() {
						exp = t.Expires.Format(time.RFC3339)
						ttl = time.Until(t.Expires).Round(time.Minute).String()
						if t.Expired {
							ttl = "expired"
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, ttl, exp, strings.Join(t.Usages, ","), t.Description)
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(list, &output)

	del := &cobra.Command{
		Use:     "delete ID|TOKEN...",
		Short:   "Delete bootstrap tokens",
		Example: "  anvil token delete abcdef",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := adminClient(hostfs.Root(root), kubeconfig)
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := master.DeleteToken(cmd.Context(), cs, id, time.Now()); err != nil {
					return err
				}
				if t, err := pki.ParseToken(id); err == nil {
					id = t.ID()
				}
				fmt.Fprintf(a.out, "deleted token %s\n", id)
			}
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}
