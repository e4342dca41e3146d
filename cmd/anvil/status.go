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
	if len(st.Replaced) > 0 {
		fmt.Fprintf(a.out, "  %s run a binary replaced since they started: anvil upgrade --to %s restarts them, one at a time\n", strings.Join(st.Replaced, ", "), st.KubernetesVersion)
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
		for _, w := range c.Warnings {
			fmt.Fprintf(a.out, "  warning: %s\n", w)
		}
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
