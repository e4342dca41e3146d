package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/approver"
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

	var o master.TokenOptions
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a bootstrap token and print it on stdout",
		Long: `Makes a bootstrap token and signs cluster-info for it, so a node can join with
it at once. Only the token is printed, on stdout, so a script can pass it on
without it reaching a log or a command line:

  anvil token create --node w4 | ssh w4 'anvil join https://EP:6443 --token-file - --ca-cert-hash sha256:H --node-name w4'

With --node NAME the token is bound to that one node: anvil's approver lets it
obtain a client certificate for NAME alone, and only while no Node of that
name exists, so a token that leaks cannot make its holder any other node, nor
take over a node already in the cluster. Make one per node; anvil cluster
apply does, and deletes each once its join is over.

Without --node the token is kubeadm's kind (group
system:bootstrappers:kubeadm:default-node-token), kept for joins where the
node's name is not known beforehand and for kubeadm's tooling: the
controller-manager approves its client certificates for ANY node name, so its
holder can become any node that is not registered yet. Prefer --node.

Every token expires: --ttl is more than 0 and at most 24h (a token that never
expires is refused). Delete a token once its join is done: anvil token delete.`,
		Example: `  # A token for node w4's join alone, valid 24h
  anvil token create --node w4

  # Valid for an hour
  anvil token create --node w5.rack4.example.com --ttl 1h --description 'rack 4'

  # kubeadm's kind: any node may join with it (and become any new node)
  anvil token create --ttl 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := master.CheckTokenTTL(o.TTL); err != nil {
				return usageError("--ttl %s: %v", o.TTL, err)
			}
			if o.Node != "" {
				if _, err := approver.NodeBootstrapGroup(o.Node); err != nil {
					return usageError("--node: %v", err)
				}
			}
			cs, err := adminClient(hostfs.Root(root), kubeconfig)
			if err != nil {
				return err
			}
			tok, err := master.CreateToken(cmd.Context(), cs, o, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(a.out, tok.Reveal())
			return nil
		},
	}
	create.Flags().DurationVar(&o.TTL, "ttl", master.MaxTokenTTL, fmt.Sprintf("how long the token is valid: more than 0, at most %s", master.MaxTokenTTL))
	create.Flags().StringVar(&o.Node, "node", "", "bind the token to the join of this node name alone (a DNS-1123 subdomain)")
	create.Flags().StringVar(&o.Description, "description", "made by anvil token create", "what the token is for")

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
				fmt.Fprintln(tw, "ID\tTTL\tEXPIRES\tNODE\tUSAGES\tDESCRIPTION")
				for _, t := range ts {
					ttl, exp := "<forever>", "<never>"
					if !t.Expires.IsZero() {
						exp = t.Expires.Format(time.RFC3339)
						ttl = time.Until(t.Expires).Round(time.Minute).String()
						if t.Expired {
							ttl = "expired"
						}
					}
					node := t.Node
					if node == "" {
						node = "<any>"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, ttl, exp, node, strings.Join(t.Usages, ","), t.Description)
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
