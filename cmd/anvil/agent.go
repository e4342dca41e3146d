package main

import (
	"github.com/spf13/cobra"

	"anvil.dev/anvil/agent"
)

func newAgentCmd(a *app) *cobra.Command {
	o := agent.ServeOptions{}
	cmd := &cobra.Command{
		Use:   "agent --config FILE",
		Short: "Run the node agent: the pod network and image archives, or the Node's heartbeat",
		Long: `Runs the node agent every machine runs (started by 'anvil join' and 'anvil
init'). On a machine that runs pods (runtime containerd) the kubelet owns the
Node; the agent programs the host-gw pod network (routes to every other
node's pods, the CNI config, masquerade) and imports every image archive put
in /var/lib/anvil/images into containerd. On a machine with runtime none it
registers the Node with its addresses, capacity and taints, renews its Lease
in kube-node-lease every 10 s and posts its status when it changes and at
least every 5 minutes. Either way it renews its client certificate through a
CSR before it expires. It fails over between the apiservers in its configuration
and never gives up on them. /healthz and /metrics are served on loopback;
under systemd it reports READY and pings the watchdog; SIGTERM stops it.`,
		Example: `  anvil agent --config /etc/anvil/agent.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.ConfigFile == "" {
				return usageError("anvil agent needs --config FILE")
			}
			o.Log = a.logger()
			return agent.Serve(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.ConfigFile, "config", agent.ConfigFile, "agent configuration file")
	return cmd
}
