package main

import (
	"net/netip"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/master"
)

func newVIPCmd(a *app) *cobra.Command {
	var address, nodeAddress string
	o := master.VIPOptions{}
	cmd := &cobra.Command{
		Use:   "vip --address VIP --node-address IP --kubeconfig FILE --identity NAME",
		Short: "Hold the floating control-plane address while this master leads",
		Long: `Runs on every master when the cluster file sets controlPlane.vip. The masters
elect a holder through the kube-system/anvil-vip Lease on their own
apiservers; the holder puts the VIP on the interface of its node address and
announces it with gratuitous ARP, and drops it as soon as it stops leading,
so the address moves within seconds when a master dies.`,
		Example: `  anvil vip --address 10.0.0.100 --node-address 10.0.0.11 \
    --kubeconfig /etc/kubernetes/anvil-vip.conf --identity m1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Address, err = netip.ParseAddr(address); err != nil {
				return usageError("--address %q is not an IP address", address)
			}
			if o.NodeAddress, err = netip.ParseAddr(nodeAddress); err != nil {
				return usageError("--node-address %q is not an IP address", nodeAddress)
			}
			if o.Kubeconfig == "" || o.Identity == "" {
				return usageError("anvil vip needs --kubeconfig and --identity")
			}
			o.Log = a.logger()
			return master.RunVIP(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&address, "address", "", "the floating address")
	cmd.Flags().StringVar(&nodeAddress, "node-address", "", "this master's address; the VIP goes on its interface")
	cmd.Flags().StringVar(&o.Kubeconfig, "kubeconfig", "/etc/kubernetes/anvil-vip.conf", "kubeconfig for this master's own apiserver")
	cmd.Flags().StringVar(&o.Identity, "identity", "", "this master's name in the election")
	cmd.Flags().DurationVar(&o.LeaseDuration, "lease-duration", 0, "how long a lease lasts without renewal (default 4s)")
	cmd.Flags().DurationVar(&o.RenewDeadline, "renew-deadline", 0, "how long the holder tries to renew before giving up (default 3s)")
	cmd.Flags().DurationVar(&o.RetryPeriod, "retry-period", 0, "how often candidates try (default 1s)")
	return cmd
}
