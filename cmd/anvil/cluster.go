package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/installer"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/master"
)

// clusterFlags are what every cluster subcommand shares.
type clusterFlags struct {
	file           string
	acceptNewKeys  bool
	concurrency    int
	connectTimeout time.Duration
}

func (f *clusterFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.file, "file", "f", "", "cluster file (required)")
	cmd.Flags().BoolVar(&f.acceptNewKeys, "accept-new-host-keys", false, "add the key of a host missing from known_hosts to that file instead of refusing it (a changed key is always refused)")
	cmd.Flags().IntVar(&f.concurrency, "concurrency", installer.DefaultConcurrency, "how many hosts to work on at once")
	cmd.Flags().DurationVar(&f.connectTimeout, "connect-timeout", installer.DefaultConnectTimeout, "bound on one SSH connection attempt")
	_ = cmd.MarkFlagRequired("file")
}

// options are the shared inputs; the ssh-agent is the environment's.
func (f *clusterFlags) options(a *app, rep *progress.Reporter) installer.Options {
	return installer.Options{
		ClusterFile:       f.file,
		AgentSocket:       os.Getenv("SSH_AUTH_SOCK"),
		AcceptNewHostKeys: f.acceptNewKeys,
		Concurrency:       f.concurrency,
		ConnectTimeout:    f.connectTimeout,
		Log:               a.logger(),
		Progress:          rep,
	}
}

func newClusterCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Provision, inspect and remove a whole cluster over SSH from a cluster file",
		Long: `From a workstation, turns the machines of a cluster file into a Kubernetes
cluster over SSH, and a second run changes nothing. Host keys are checked
strictly against known_hosts; keys come from the identity files and
ssh-agent; bastions and passwordless sudo are supported. Binaries are
uploaded only when their sha256 on the host differs.`,
	}
	cmd.AddCommand(newClusterApplyCmd(a), newClusterResetCmd(a), newClusterStatusCmd(a), newClusterKubeconfigCmd(a), newClusterHelperCmd(a),
		newClusterBackupCmd(a), newClusterRestoreCmd(a), newClusterSupportBundleCmd(a), newClusterRotateCACmd(a))
	return cmd
}

func newClusterApplyCmd(a *app) *cobra.Command {
	f := &clusterFlags{}
	var (
		dryRun, rollback     bool
		force                bool
		anvilBin, kubeconfig string
		kubeDirs             []string
		timeout, tokenTTL    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make the machines of a cluster file a working cluster",
		Long: `Connects to every host, gathers facts (read-only), validates them, uploads
anvil and the Kubernetes binaries where their sha256 differs, initialises the
first master, joins the other masters one at a time and the workers in
parallel, waits until every Node is Ready, and writes the admin kubeconfig
beside the cluster file. Hosts that are already part of the cluster are left
as they are, so adding a host to the file and applying again joins only it.
Join tokens and certificate keys travel only on the joins' stdin, and are
deleted from the cluster once the joins are over.

A host that fails (unreachable, a changed host key, a failed join) is named
with the phase it failed in; the others go on where that is safe, and the
exit status is 1. On a terminal the progress is one live line per host;
otherwise one line per host and phase. A summary table ends it.

The phases, in order:
  connect       SSH to every host (bastion, strict host keys, sudo -n)
  facts         OS, arch, addresses, clock, ports, what of anvil is installed
  validate      ports in use, duplicate hostnames/machine IDs/addresses, clock skew
  upload        anvil and the component binaries, zstd-compressed, by sha256
  upgrade       masters that run another kubernetesVersion than the file's:
                anvil upgrade --to VERSION, one master at a time
  init          anvil init on the first master
  join-masters  anvil join --control-plane, one master at a time
  join-workers  anvil join on the workers, in parallel, with a fresh token
  upgrade-workers  workers whose kubelet runs another version: drained, switched
                (anvil upgrade), uncordoned and Ready again, a quarter at a time
  credentials   delete the join tokens and sealed certificates the run made
  ready         wait until every Node is Ready
  kubeconfig    write the admin kubeconfig on this machine (0600)`,
		Example: `  # Provision, or converge, the cluster; a second run changes nothing
  anvil cluster apply -f cluster.yaml

  # Print per host what apply would do, and change nothing
  anvil cluster apply -f cluster.yaml --dry-run

  # First contact: record the hosts' keys in known_hosts (check the
  # fingerprints it prints); a changed key is refused regardless
  anvil cluster apply -f cluster.yaml --accept-new-host-keys

  # Keys from the running ssh-agent (SSH_AUTH_SOCK) when the file names
  # no identityFile; 20 hosts at a time; the kubeconfig elsewhere
  anvil cluster apply -f cluster.yaml --concurrency 20 --kubeconfig ~/.kube/anvil

  # Upgrade the masters: set kubernetesVersion to the next minor, then
  anvil cluster apply -f cluster.yaml --dry-run
  anvil cluster apply -f cluster.yaml
  # Undo it: the old kubernetesVersion back in the file, then
  anvil cluster apply -f cluster.yaml --rollback

  # A lab on this machine, then the cluster on it
  sudo anvil lab up --name demo --masters 3 --workers 2
  sudo anvil cluster apply -f /var/lib/anvil/lab/demo/cluster.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if anvilBin == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				anvilBin = self
			}
			if !cmd.Flags().Changed("kube-dir") {
				kubeDirs = defaultKubeDirs(anvilBin)
			}
			if err := master.CheckTokenTTL(tokenTTL); err != nil {
				return usageError("--token-ttl %s: %v", tokenTTL, err)
			}
			rep := progress.New(a.errOut, progress.ForTerminal(a.errOut))
			o := installer.ApplyOptions{
				Options: f.options(a, rep), DryRun: dryRun, Rollback: rollback, Force: force,
				Anvil: anvilBin, KubeDirs: kubeDirs, Kubeconfig: kubeconfig,
				Timeout: timeout, TokenTTL: tokenTTL,
			}
			res, err := installer.Apply(cmd.Context(), o)
			rep.Close()
			if res != nil && dryRun {
				fmt.Fprintln(a.out)
				res.WritePlan(a.out)
			}
			if res != nil && !dryRun {
				fmt.Fprintf(a.errOut, "\nuploaded %s in %.1fs\n", human.Bytes(res.BytesUploaded), res.Elapsed.Seconds())
				if err == nil && res.Kubeconfig != "" {
					fmt.Fprintf(a.out, "The cluster is ready. Use it with:\n  kubectl --kubeconfig %s get nodes -o wide\n", res.Kubeconfig)
				}
				if err == nil && res.BackupSigningKey != "" && !res.Pinned {
					fmt.Fprintf(a.out, "Backups are signed by %s. Pin it in the cluster file, so that restores refuse any other:\n"+
						"  backup:\n    signingPublicKey: %s\n", res.BackupSigningKey, res.BackupSigningKey)
				}
			}
			if err != nil {
				return hostFailures(err)
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "connect and gather facts, then print per host what apply would do, and change nothing")
	cmd.Flags().BoolVar(&rollback, "rollback", false, "allow a kubernetesVersion one minor below the masters': undo an upgrade")
	cmd.Flags().BoolVar(&force, "force", false, "upgrade the reachable masters while a master is down (refused otherwise: etcd keeps its quorum only while every other member answers)")
	cmd.Flags().StringVar(&anvilBin, "anvil-binary", "", "the anvil binary to install on the hosts (default: this one)")
	cmd.Flags().StringSliceVar(&kubeDirs, "kube-dir", nil, "directories holding <version>/ Kubernetes builds (default: ./bin/kube, then kube/ beside anvil, then /opt/anvil/bin)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "where to write the admin kubeconfig (default: beside the cluster file, NAME.kubeconfig)")
	cmd.Flags().DurationVar(&timeout, "timeout", installer.DefaultTimeout, "bound on init, on each join, and on waiting for Ready Nodes")
	cmd.Flags().DurationVar(&tokenTTL, "token-ttl", installer.DefaultTokenTTL, fmt.Sprintf("lifetime of the join tokens this run makes, one per joining host (at most %s)", master.MaxTokenTTL))
	return cmd
}

// defaultKubeDirs are where builds are looked for: a checkout's bin/kube,
// kube/ beside the anvil binary (bin/anvil and bin/kube), and this
// machine's own installation.
func defaultKubeDirs(anvilBin string) []string {
	return []string{defaultBuildDir, filepath.Join(filepath.Dir(anvilBin), "kube"), hostfs.BinDir}
}

func newClusterResetCmd(a *app) *cobra.Command {
	f := &clusterFlags{}
	var (
		force, dryRun, removeBackups bool
		kubeconfig                   string
	)
	cmd := &cobra.Command{
		Use:   "reset -f FILE",
		Short: "Remove anvil and the cluster from every host of a cluster file",
		Long: `Runs 'anvil reset' on every host, workers first, then masters one at a time
with the first master last, and removes the binaries and links apply
installed and the admin kubeconfig it wrote here. Local etcd backups on the
masters are kept unless --remove-backups. Asks for confirmation unless --force.`,
		Example: `  anvil cluster reset -f cluster.yaml
  anvil cluster reset -f cluster.yaml --dry-run
  anvil cluster reset -f cluster.yaml --force --remove-backups`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force && !dryRun {
				if err := a.confirm("reset", fmt.Sprintf("This stops Kubernetes on every host of %s and deletes its certificates, etcd data and binaries.", f.file)); err != nil {
					return err
				}
			}
			rep := progress.New(a.errOut, progress.ForTerminal(a.errOut))
			res, err := installer.Reset(cmd.Context(), installer.ResetOptions{
				Options: f.options(a, rep), DryRun: dryRun,
				RemoveBackups: removeBackups, Kubeconfig: kubeconfig,
			})
			rep.Close()
			if res != nil && dryRun {
				fmt.Fprintln(a.out)
				res.WritePlan(a.out)
			}
			if err != nil {
				return hostFailures(err)
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print per host what reset would do, and change nothing")
	cmd.Flags().BoolVar(&removeBackups, "remove-backups", false, "also delete the masters' local etcd backups")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "the admin kubeconfig apply wrote, removed at the end (default: beside the cluster file)")
	return cmd
}

func newClusterStatusCmd(a *app) *cobra.Command {
	f := &clusterFlags{}
	var output string
	cmd := &cobra.Command{
		Use:   "status -f FILE",
		Short: "Show every host: reachable, anvil version, components, Node Ready, etcd member",
		Example: `  anvil cluster status -f cluster.yaml
  anvil cluster status -f cluster.yaml -o json

  # Exit status 3 when a host is unreachable or unhealthy
  anvil cluster status -f cluster.yaml >/dev/null || echo "not healthy"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep *progress.Reporter
			if po := progress.ForTerminal(a.errOut); po.Live {
				rep = progress.New(a.errOut, po)
			}
			o := f.options(a, rep)
			st, err := installer.Status(cmd.Context(), o)
			if rep != nil {
				rep.Close()
			}
			if err != nil {
				return err
			}
			if err := printOutput(a.out, output, st, func() error { return printClusterStatus(a.out, st) }); err != nil {
				return err
			}
			if !st.Healthy {
				return exitError{code: 3, msg: ""}
			}
			return nil
		},
	}
	f.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func printClusterStatus(w io.Writer, st *installer.ClusterStatus) error {
	fmt.Fprintf(w, "cluster %s, API %s\n\n", st.Name, st.Endpoint)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tROLE\tADDRESS\tREACHABLE\tANVIL\tCOMPONENTS\tNODE\tETCD")
	for _, h := range st.Hosts {
		reach := "yes"
		if !h.Reachable {
			reach = "NO"
		}
		anvil := "-"
		if h.Anvil != nil {
			anvil = orDash(h.Anvil.Version) + " (" + h.Anvil.SHA256[:12] + ")"
		}
		var comps []string
		for _, c := range h.Components {
			s := c.Name + " " + c.State
			if !c.Healthy {
				s += " FAILING"
			}
			comps = append(comps, s)
		}
		node := "-"
		if n := h.Node; n != nil {
			switch {
			case n.Ready:
				node = "Ready"
			case n.Registered:
				node = "NotReady"
			default:
				node = "missing"
			}
		}
		etcd := "-"
		if e := h.Etcd; e != nil {
			switch {
			case !e.Member:
				etcd = "NOT A MEMBER"
			case e.Leader:
				etcd = "member, leader"
			case e.Learner:
				etcd = "learner"
			default:
				etcd = "member"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Role, h.Address, reach, anvil, orDash(strings.Join(comps, ", ")), node, etcd)
	}
	tw.Flush()
	if len(st.AddOns) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ADD-ON\tREADY\tPROBLEM")
		for _, a := range st.AddOns {
			fmt.Fprintf(tw, "%s\t%d/%d\t%s\n", a.Name, a.Ready, a.Desired, orDash(a.Problem))
		}
		tw.Flush()
	}
	for _, h := range st.Hosts {
		if h.Error != "" {
			fmt.Fprintf(w, "\n%s: %s", h.Name, h.Error)
		} else if len(h.Problems) > 0 {
			fmt.Fprintf(w, "\n%s: %s", h.Name, strings.Join(h.Problems, "; "))
		}
		for _, warning := range h.Warnings {
			fmt.Fprintf(w, "\n%s: warning: %s", h.Name, warning)
		}
	}
	fmt.Fprintln(w)
	return nil
}

func newClusterKubeconfigCmd(a *app) *cobra.Command {
	f := &clusterFlags{}
	cmd := &cobra.Command{
		Use:   "kubeconfig -f FILE",
		Short: "Print the cluster's admin kubeconfig, read from the first master that has one",
		Example: `  anvil cluster kubeconfig -f cluster.yaml > admin.conf
  KUBECONFIG=admin.conf kubectl get nodes -o wide`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := installer.Kubeconfig(cmd.Context(), f.options(a, nil))
			if err != nil {
				return err
			}
			_, err = a.out.Write(b)
			return err
		},
	}
	f.add(cmd)
	return cmd
}

// newClusterHelperCmd is what apply runs on a host through SSH, with the
// anvil it just installed there; not for people.
func newClusterHelperCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "helper", Hidden: true, Short: "What cluster apply runs on a host"}
	var hashCache string
	var updateCache bool
	hash := &cobra.Command{
		Use:  "hash [--cache FILE [--update-cache]] FILE...",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return installer.HashFiles(cmd.Context(), a.out, args, hashCache, updateCache)
		},
	}
	hash.Flags().StringVar(&hashCache, "cache", "", "sha256 of files already verified, trusted while their inode, size, mtime and ctime stay")
	hash.Flags().BoolVar(&updateCache, "update-cache", false, "record what was hashed in --cache")
	cmd.AddCommand(hash)
	var ro installer.ReceiveOptions
	receive := &cobra.Command{
		Use:  "receive --dir DIR [--file-dir DIR]... [--link-dir DIR]... [--cache FILE]",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return installer.Receive(cmd.Context(), a.in, a.out, ro)
		},
	}
	receive.Flags().StringVar(&ro.Dir, "dir", "", "the version directory, where the files land")
	receive.Flags().StringSliceVar(&ro.FileDirs, "file-dir", nil, "another directory files may land in")
	receive.Flags().StringSliceVar(&ro.LinkDirs, "link-dir", []string{hostfs.LinkDir}, "a directory links to the files may be made in")
	receive.Flags().StringVar(&ro.Cache, "cache", "", "record each file landed in this hash cache (see hash --cache)")
	_ = receive.MarkFlagRequired("dir")
	cmd.AddCommand(receive)
	return cmd
}

// hostFailures prints each host's failure on its own lines and ends the
// command with status 1 (the progress view already named them live).
func hostFailures(err error) error {
	var he *installer.HostError
	if !errors.As(err, &he) {
		return err
	}
	return exitError{code: 1, msg: "failed:\n  " + strings.ReplaceAll(err.Error(), "\n", "\n  ")}
}
