package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

func newStatusCmd(a *app) *cobra.Command {
	var root, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this machine's components, etcd membership and certificate expiry",
		Example: `  anvil status
  anvil status -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := master.ReadStatus(cmd.Context(), hostfs.Root(root))
			if err != nil {
				return err
			}
			err = printOutput(a.out, output, st, func() error { return printStatus(a, st) })
			if err == nil && !st.Healthy {
				return exitError{code: 3, msg: ""}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	addOutputFlag(cmd, &output)
	return cmd
}

func printStatus(a *app, st *master.Status) error {
	fmt.Fprintf(a.out, "node %s (%s), layout %s, kubernetes %s, since %s\n\n", st.Node, st.Role, st.Layout, st.KubernetesVersion, st.Initialized.Format(time.RFC3339))
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tSTATE\tHEALTH\tVERSION\tPID\tUPTIME\tRESTARTS")
	for _, c := range st.Components {
		health := "ok"
		if !c.Healthy {
			health = "FAILING"
		}
		pid := "-"
		if c.PID > 0 {
			pid = fmt.Sprint(c.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", c.Name, c.State, health, c.Version, pid, (time.Duration(c.Uptime) * time.Second).String(), c.Restarts)
	}
	tw.Flush()
	for _, c := range st.Components {
		if c.Problem != "" {
			fmt.Fprintf(a.out, "  %s: %s\n", c.Name, c.Problem)
		}
	}
	if e := st.Etcd; e != nil {
		fmt.Fprintf(a.out, "\netcd: leader %s, revision %d, db %.1f MiB\n", orDash(e.Leader), e.Revision, float64(e.DBSize)/(1<<20))
		if e.Error != "" {
			fmt.Fprintf(a.out, "  error: %s\n", e.Error)
		}
		tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MEMBER\tID\tPEER URLS\tLEARNER\tLEADER")
		for _, m := range e.Members {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%v\n", m.Name, m.ID, strings.Join(m.PeerURLs, ","), m.Learner, m.Leader)
		}
		tw.Flush()
	}
	if c := st.Certificates; c != nil {
		fmt.Fprintf(a.out, "\ncertificates: soonest to expire is %s, on %s (%d days)\n", c.Soonest, c.Expires.Format("2006-01-02"), c.ResidualDay)
		if len(c.Expired) > 0 {
			fmt.Fprintf(a.out, "  EXPIRED: %s (anvil certs renew)\n", strings.Join(c.Expired, ", "))
		}
	}
	return nil
}

// adminClient connects with the admin kubeconfig this master holds.
func adminClient(root hostfs.Root, kubeconfig string) (kubernetes.Interface, error) {
	if kubeconfig == "" {
		kubeconfig = root.Kubeconfig(pki.AdminKubeconfig)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", kubeconfig, err)
	}
	cfg.Timeout = 15 * time.Second
	return kubernetes.NewForConfig(cfg)
}

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
