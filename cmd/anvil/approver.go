package main

import (
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/master"
)

func newApproverCmd(a *app) *cobra.Command {
	var kubeconfig, health string
	o := approver.Options{}
	cmd := &cobra.Command{
		Use:   "approver --kubeconfig FILE",
		Short: "Approve kubelet certificates only for what each node is",
		Long: `Runs on every master; one of them decides at a time (the kube-system/anvil-approver
Lease). It approves a kubelet's serving certificate only when the requester is
that node and every name and address in it is one of that Node's own, and a
node's client certificate only for the node its bootstrap token was made for,
while no Node of that name exists, or as that node's own renewal. Every other
request of those two kinds is denied with the reason, which kubectl get csr
shows. The controller-manager signs what is approved.`,
		Example: `  anvil approver --kubeconfig /etc/kubernetes/anvil-approver.conf`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return err
			}
			cfg.Timeout = 15 * time.Second
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			o.Log = a.logger()
			if health != "" {
				stop, err := master.ServeHealth(cmd.Context(), health)
				if err != nil {
					return err
				}
				defer stop()
			}
			return approver.Run(cmd.Context(), cs, o)
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "/etc/kubernetes/anvil-approver.conf", "kubeconfig for this master's own apiserver")
	cmd.Flags().StringVar(&health, "health-address", "", "serve /healthz here (host:port) while running")
	cmd.Flags().StringVar(&o.Identity, "identity", "", "this master's name in the election (default: the host name)")
	cmd.Flags().BoolVar(&o.OwnBootstrapApproval, "own-bootstrap-approval", false, "deny client certificates of bootstrap tokens bound to no node (anvil is their only approver)")
	return cmd
}
