package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/installer"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/pki"
)

func newClusterRotateCACmd(a *app) *cobra.Command {
	f := &clusterFlags{}
	var output, kubeconfig string
	var stages []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-ca -f FILE",
		Short: "Replace the cluster's CAs without downtime, in three stages over SSH",
		Long: `Replace the cluster CA, the etcd CA and the front-proxy CA of a running
cluster without stopping it. Each stage runs on every master, one at a time
(the first master first), then on every worker, before the next begins:

  trust    the next CAs are trusted beside the current ones everywhere (the
           first master makes them; the others fetch them sealed with a
           certificate key made for this run and handed over on stdin); then
           CoreDNS starts again once kube-root-ca.crt holds the new CA.
  reissue  the new CAs sign: every certificate and kubeconfig is issued again,
           the nodes' client certificates through CSRs, the kubelets' serving
           certificates too.
  drop     the old CAs are trusted nowhere any more.

Components restart one at a time, each ready before the next, and the masters
take turns, so etcd's quorum and the API stay up. The workstation's admin
kubeconfig (-k, default beside the cluster file) is replaced after each stage.
Every host must be reachable. A run that stopped is run again: it resumes at
the stage where it stopped. Pods of your own that talk to the API must start
again between the trust and the reissue stages (run --stage trust, restart
them, then --stage reissue --stage drop); other copies of the admin kubeconfig
must be replaced after the reissue stage. The CA hash for joins changes: the
new one is 'anvil certs ca-hash' on a master.`,
		Example: `  anvil cluster rotate-ca -f cluster.yaml
  # in two steps, restarting your API clients in between
  anvil cluster rotate-ca -f cluster.yaml --stage trust
  anvil cluster rotate-ca -f cluster.yaml --stage reissue --stage drop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep := progress.New(a.errOut, progress.ForTerminal(a.errOut))
			o := installer.RotateCAOptions{Options: f.options(a, rep), Stages: stages, Kubeconfig: kubeconfig, Timeout: timeout}
			res, err := installer.RotateCA(cmd.Context(), o)
			rep.Close()
			if err != nil {
				return err
			}
			return printOutput(a.out, output, res, func() error {
				fmt.Fprintf(a.out, "CA rotation: stages %s done on every host in %s\n", strings.Join(res.Stages, ", "), res.Took.Round(time.Second))
				return nil
			})
		},
	}
	f.add(cmd)
	cmd.Flags().StringSliceVar(&stages, "stage", nil, "stage(s) to run, in order: "+strings.Join(pki.RotateStages(), ", ")+" (default all)")
	cmd.Flags().StringVarP(&kubeconfig, "kubeconfig", "k", "", "the workstation's admin kubeconfig to keep current (default: beside the cluster file, when there)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "bound on each host's part of a stage")
	addOutputFlag(cmd, &output)
	return cmd
}
