package main

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

// nodeFlags are the flags every node command shares.
type nodeFlags struct {
	root   string
	layout string
	force  bool
}

func (f *nodeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.root, "root", "", "prefix for every host path (tests, packaging)")
	cmd.Flags().StringVar(&f.layout, "layout", "", "how components run: systemd, static-pod or process (default: the cluster file's, else systemd)")
	cmd.Flags().BoolVar(&f.force, "force", false, "go ahead over an existing installation")
}

// initFlags are init's flags; the same set serves `init phase NAME`.
type initFlags struct {
	nodeFlags
	file              string
	node              string
	advertise         string
	clusterName       string
	kubernetesVersion string
	tokenTTL          time.Duration
	timeout           time.Duration
	uploadCerts       bool
}

func (f *initFlags) add(cmd *cobra.Command) {
	f.nodeFlags.add(cmd)
	cmd.Flags().StringVarP(&f.file, "file", "f", "", "cluster file; with --node, this machine's host in it")
	cmd.Flags().StringVar(&f.node, "node", "", "this machine's host name in the cluster file")
	cmd.Flags().StringVar(&f.node, "node-name", "", "this machine's node name (without -f; default: the hostname)")
	cmd.Flags().StringVar(&f.advertise, "advertise-address", "", "address the apiserver and etcd announce (default: the address of the default route's interface)")
	cmd.Flags().StringVar(&f.clusterName, "cluster-name", "anvil", "cluster name (without -f)")
	cmd.Flags().StringVar(&f.kubernetesVersion, "kubernetes-version", images.DefaultVersion, "Kubernetes version (without -f)")
	cmd.Flags().DurationVar(&f.tokenTTL, "token-ttl", 24*time.Hour, fmt.Sprintf("lifetime of the bootstrap token init makes (at most %s)", master.MaxTokenTTL))
	cmd.Flags().DurationVar(&f.timeout, "timeout", 3*time.Minute, "how long to wait for the control plane to become ready")
	cmd.Flags().BoolVar(&f.uploadCerts, "upload-certs", false, "seal the shared CAs and keys in the cluster for an hour and print the key more masters join with")
}

// options turns the flags into master.InitOptions: the cluster file when
// given, else the one an earlier init saved, else a one-master cluster made
// from the flags.
func (f *initFlags) options(a *app) (master.InitOptions, error) {
	root := hostfs.Root(f.root)
	o := master.InitOptions{Root: root, Force: f.force, TokenTTL: f.tokenTTL, Timeout: f.timeout, UploadCerts: f.uploadCerts, Log: a.logger()}
	if err := master.CheckTokenTTL(f.tokenTTL); err != nil {
		return o, usageError("--token-ttl %s: %v", f.tokenTTL, err)
	}
	self, err := os.Executable()
	if err != nil {
		return o, err
	}
	o.Anvil = self
	if f.advertise != "" {
		addr, err := netip.ParseAddr(f.advertise)
		if err != nil {
			return o, usageError("--advertise-address %q is not an IP address", f.advertise)
		}
		o.AdvertiseAddress = addr
	}
	if f.file != "" && f.node == "" {
		return o, usageError("with -f, name this machine's host with --node NAME")
	}
	c, node, warnings, err := master.InitCluster(root, master.ClusterSource{
		File: f.file, Node: f.node, AdvertiseAddress: o.AdvertiseAddress,
		Name: f.clusterName, KubernetesVersion: f.kubernetesVersion, Layout: v1alpha1.Layout(f.layout),
	})
	if err != nil {
		return o, err
	}
	for _, w := range warnings {
		a.progress("warning: " + w.Error())
	}
	o.Cluster, o.Node = c, node
	if f.layout != "" {
		o.Layout = v1alpha1.Layout(f.layout)
		o.Cluster.ControlPlane.Layout = o.Layout
	}
	return o, nil
}

// hostnameOr is this machine's host name, or fallback when it has none.
func hostnameOr(fallback string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return fallback
}

func newInitCmd(a *app) *cobra.Command {
	f := &initFlags{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Make this machine the first master of a new cluster",
		Long: `Turns this machine into the first master: a kubeadm-compatible PKI, the
embedded etcd member, and the real kube-apiserver, kube-controller-manager and
kube-scheduler, laid out as systemd units, static pods, or processes anvil
supervises itself. Returns once the control plane is ready, and prints how to
use it and how to join more machines.

The phases, in order (run one with 'anvil init phase NAME'):
` + master.InitPhaseHelp(),
		Example: `  # A control plane on this machine, supervised by anvil (no systemd needed)
  anvil init --layout process

  # From a cluster file, as 'anvil cluster apply' runs it on the first master
  anvil init -f cluster.yaml --node m1

  # Everything under a directory instead of / (tests, packaging)
  anvil init --layout process --root /tmp/cp --advertise-address 10.0.0.10`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(cmd, a, f, nil)
		},
	}
	f.add(cmd)
	phase := &cobra.Command{
		Use:       "phase NAME",
		Short:     "Run one phase of init",
		Example:   "  anvil init phase preflight --layout process\n  anvil init phase certs -f cluster.yaml --node m1",
		Args:      cobra.ExactArgs(1),
		ValidArgs: master.InitPhaseNames(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInit(cmd, a, f, args)
		},
	}
	f.add(phase)
	cmd.AddCommand(phase)
	return cmd
}

func runInit(cmd *cobra.Command, a *app, f *initFlags, phases []string) error {
	o, err := f.options(a)
	if err != nil {
		return err
	}
	task, done := a.nodeTask(o.Node)
	o.Task = task
	res, err := master.RunInitPhases(cmd.Context(), o, phases)
	done()
	if err != nil {
		return err
	}
	if len(phases) > 0 {
		if res.CertificateKey != nil {
			printControlPlaneJoin(a, res)
		}
		return nil
	}
	printInitResult(a, o, res)
	return nil
}

// printControlPlaneJoin shows how another master joins: the token and the
// key go on stdin (first line, second line), never on a command line.
func printControlPlaneJoin(a *app, res *master.InitResult) {
	fmt.Fprintf(a.out, "Join another master within the hour: on it, run\n")
	fmt.Fprintf(a.out, "  printf '%%s\\n%%s\\n' '%s' '%s' | anvil join %s --control-plane --token-file - --certificate-key-file - --ca-cert-hash %s\n\n",
		res.Token.Reveal(), res.CertificateKey.Reveal(), res.Endpoint, res.CAHash)
}

func printInitResult(a *app, o master.InitOptions, res *master.InitResult) {
	w := a.out
	fmt.Fprintf(w, "\nThe control plane is ready: %s (layout %s, ready %.1fs after start).\n\n", res.Endpoint, res.Layout, res.Ready.Seconds())
	fmt.Fprintf(w, "Use it:\n  export KUBECONFIG=%s\n  kubectl get --raw /readyz\n", res.AdminKubeconfig)
	fmt.Fprintf(w, "  (kubectl is %s)\n\n", o.Root.Join(hostfs.BinDir, o.Cluster.KubernetesVersion, images.Kubectl))
	if !res.Token.IsZero() {
		fmt.Fprintf(w, "Join a worker: on it, run (the token goes on stdin, so it never shows in the process list)\n")
		fmt.Fprintf(w, "  echo '%s' | anvil join %s --token-file - --ca-cert-hash %s\n\n", res.Token.Reveal(), res.Endpoint, res.CAHash)
		fmt.Fprintf(w, "Any node may join with this token until it expires in %s; better, make one per node, bound to\n", o.TokenTTL)
		fmt.Fprintf(w, "its name: anvil token create --node NAME\n\n")
	}
	if res.CertificateKey != nil {
		printControlPlaneJoin(a, res)
	} else {
		fmt.Fprintf(w, "To join more masters: anvil init phase upload-certs (prints the command)\n")
	}
}
