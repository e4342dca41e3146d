package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/installer"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/support"
)

type supportBundleOptions struct {
	root           string
	output         string
	name           string
	since          time.Duration
	clusterObjects bool
}

func newSupportBundleCmd(a *app) *cobra.Command {
	var o supportBundleOptions
	cmd := &cobra.Command{
		Use:   "support-bundle [-o FILE]",
		Short: "Collect this machine's versions, status, unit states, logs and facts into one redacted tar.gz",
		Long: `Writes one tar.gz, a directory named for this node, holding what someone
helping with it asks for first: anvil's and the components' versions (the
installed manifests), 'anvil status -o json', etcd's members and health, the
state and the last --since of the journal of every unit anvil declares (or,
in the process layout, the supervisor's status and logs), certificate and
kubeconfig expiry, kernel and cgroup facts (uname, /proc/cmdline,
/proc/self/cgroup, cgroup mounts, /proc/filesystems), anvil's configuration
files and, on a master with --cluster-objects, the cluster's Nodes and events.

Secrets never enter it: private keys, bootstrap tokens, kubeconfigs'
client-key-data, client-certificate-data and token, the encryption config's
secrets and age identities are replaced by <redacted>. What could not be
collected is listed in problems.txt inside. The file is written 0600 and
atomically: after a failure there is none. Run it as root.`,
		Example: `  # This machine's bundle, in the current directory
  sudo anvil support-bundle

  # A day of journal, the cluster's Nodes and events too, to a chosen file
  sudo anvil support-bundle --since 24h --cluster-objects -o /tmp/m1.tar.gz

  # Stream it (what 'anvil cluster support-bundle' runs on each host)
  sudo anvil support-bundle -o - > m1.tar.gz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root := hostfs.Root(o.root)
			if o.name == "" {
				o.name = nodeName(root)
			}
			so := support.Options{Root: root, Dir: o.name, Since: o.since, ClusterObjects: o.clusterObjects}
			if o.output == "-" {
				res, err := support.Collect(cmd.Context(), a.out, so)
				if err != nil {
					return err
				}
				reportProblems(a.errOut, res)
				return nil
			}
			if o.output == "" {
				o.output = fmt.Sprintf("anvil-support-%s-%s.tar.gz", o.name, time.Now().UTC().Format("20060102-150405"))
			}
			pr, pw := io.Pipe()
			var res *support.Result
			done := make(chan struct{})
			go func() {
				defer close(done)
				var err error
				res, err = support.Collect(cmd.Context(), pw, so)
				pw.CloseWithError(err)
			}()
			err := fsutil.WriteFrom(o.output, pr, 0o600, 0o700)
			pr.CloseWithError(err)
			<-done
			if err != nil {
				return err
			}
			reportProblems(a.errOut, res)
			fmt.Fprintln(a.out, o.output)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.root, "root", "", "prefix for every host path")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "the archive to write, or - for stdout (default: anvil-support-NODE-TIME.tar.gz here)")
	cmd.Flags().StringVar(&o.name, "name", "", "the archive's top directory (default: the node's name, else the hostname)")
	cmd.Flags().DurationVar(&o.since, "since", support.DefaultSince, "how far back the journal goes")
	cmd.Flags().BoolVar(&o.clusterObjects, "cluster-objects", false, "add the cluster's Nodes and events, read with this master's admin kubeconfig")
	return cmd
}

// nodeName is the node init or join recorded, else the hostname.
func nodeName(root hostfs.Root) string {
	if st, err := master.ReadNodeState(root); err == nil && st.Node != "" {
		return st.Node
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "host"
}

// reportProblems says on stderr what the bundle could not hold.
func reportProblems(w io.Writer, res *support.Result) {
	if res == nil || len(res.Problems) == 0 {
		return
	}
	fmt.Fprintf(w, "%d parts could not be collected (problems.txt in the bundle):\n", len(res.Problems))
	for _, p := range res.Problems {
		fmt.Fprintln(w, "  "+p)
	}
}

func newClusterSupportBundleCmd(a *app) *cobra.Command {
	f := &clusterFlags{}
	var (
		output string
		since  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "support-bundle -f FILE [-o FILE]",
		Short: "Collect every host's support bundle into one redacted tar.gz",
		Long: `Runs 'anvil support-bundle' as root on every host of the cluster file over
SSH (the anvil apply installed there) and writes their archives into one
tar.gz: a directory per host, the cluster's Nodes and events (from the first
master reached) in cluster/, and unreachable.txt naming each host whose
section is missing and why (unreachable, a refused host key, no anvil). The
hosts' files are redacted there and once more here. The archive is written
0600 and atomically; the progress is one line per host, like apply.

The exit status is 0 when the bundle was written, even with hosts missing
from it; those are named on stderr.`,
		Example: `  anvil cluster support-bundle -f cluster.yaml
  anvil cluster support-bundle -f cluster.yaml -o /tmp/lab.tar.gz --since 24h

  # What is in it
  tar -tzf /tmp/lab.tar.gz
  tar -xzOf /tmp/lab.tar.gz unreachable.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output == "" {
				output = fmt.Sprintf("anvil-support-%s.tar.gz", time.Now().UTC().Format("20060102-150405"))
			}
			rep := progress.New(a.errOut, progress.ForTerminal(a.errOut))
			res, err := installer.SupportBundle(cmd.Context(), installer.SupportBundleOptions{
				Options: f.options(a, rep), Output: output, Since: since,
			})
			rep.Close()
			if err != nil {
				return err
			}
			for _, name := range slices.Sorted(maps.Keys(res.Unreachable)) {
				fmt.Fprintf(a.errOut, "%s is not in the bundle: %s\n", name, res.Unreachable[name])
			}
			fmt.Fprintf(a.errOut, "%d hosts, %s\n", len(res.Hosts), human.Bytes(res.Bytes))
			fmt.Fprintln(a.out, res.Output)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "the archive to write (default: anvil-support-TIME.tar.gz here)")
	cmd.Flags().DurationVar(&since, "since", support.DefaultSince, "how far back the hosts' journals go")
	return cmd
}
