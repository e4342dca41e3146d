package main

import (
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/spf13/cobra"

	api "anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
)

type renderOptions struct {
	file   string
	node   string
	layout string
	root   string
	diff   bool
}

func newRenderCmd(a *app) *cobra.Command {
	var o renderOptions
	cmd := &cobra.Command{
		Use:   "render -f FILE --node NAME [--layout L] [--root DIR] [--diff]",
		Short: "Write this node's units or manifests and control-plane configs, for review",
		Long: `Render everything a node runs from the cluster file, in one layout, under a
root directory, without starting anything:

  systemd     /etc/systemd/system/*.service
  static-pod  /etc/kubernetes/manifests/*.yaml (the node agent is left to a kubelet)
  process     /etc/anvil/processes/*.json, the specs anvil's own supervisor runs

plus, on a master, /etc/anvil/etcd.yaml, the apiserver's encryption, audit and
authentication configs and the scheduler's config, with their modes (0600 for
everything under /etc/anvil and for manifests, 0644 for units, 0700 for new
directories). Certificates and kubeconfigs are 'anvil certs generate'.

Paths inside systemd units and static pods are real host paths whatever --root
is: the tree is for review or packaging. In the process layout anvil runs the
components on this machine, so paths inside the specs are under --root.

Writing is idempotent: unchanged files are left alone, and an existing
encryption key is always kept. --diff prints a unified diff against what is
under --root and writes nothing; secret files are compared but not shown.`,
		Example: `  # Review what a master would run, in a scratch directory
  anvil render -f cluster.yaml --node m1 --root /tmp/m1

  # What would change on this machine
  anvil render -f cluster.yaml --node m1 --diff

  # Static-pod manifests for a kubelet
  anvil render -f cluster.yaml --node m1 --layout static-pod --root /tmp/m1`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runRender(a, o) },
	}
	cmd.Flags().StringVarP(&o.file, "file", "f", "", "cluster file")
	cmd.Flags().StringVar(&o.node, "node", "", "name of this node in the cluster file")
	cmd.Flags().StringVar(&o.layout, "layout", "", "systemd, static-pod or process (default: the cluster file's controlPlane.layout)")
	cmd.Flags().StringVar(&o.root, "root", "/", "host root directory the tree is written under")
	cmd.Flags().BoolVar(&o.diff, "diff", false, "show what would change and write nothing")
	_ = cmd.MarkFlagRequired("file")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}

func runRender(a *app, o renderOptions) error {
	c, warnings, err := api.Load(o.file)
	for _, w := range warnings {
		fmt.Fprintln(a.errOut, warningLine(w))
	}
	if err != nil {
		return err
	}
	layout := c.ControlPlane.Layout
	if o.layout != "" {
		layout = api.Layout(o.layout)
	}
	if !slices.Contains(api.Layouts(), layout) {
		return usageError("unknown layout %q: use systemd, static-pod or process", layout)
	}
	ro := master.RenderOptions{Cluster: c, Node: o.node, Layout: layout, Root: hostfs.Root(o.root), Diff: o.diff}
	if layout == api.LayoutProcess {
		if ro.AnvilBinary, err = os.Executable(); err != nil {
			return fmt.Errorf("find anvil's own executable: %w", err)
		}
	}
	res, err := master.Render(ro)
	if err != nil {
		return err
	}
	if o.diff {
		if !res.Changed {
			a.progress("no changes")
			return nil
		}
		_, err := io.WriteString(a.out, res.Diff)
		return err
	}
	for _, w := range res.Written {
		if _, err := fmt.Fprintf(a.out, "%-9s %s\n", w.Outcome, w.Path); err != nil {
			return err
		}
	}
	return nil
}
