package agent

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/node"
)

// InstallOptions say how to install and start the agent on this machine.
type InstallOptions struct {
	// Root is where files are written. In the process layout it is also
	// the runtime root the agent's paths live under (a test's --root).
	Root   hostfs.Root
	Layout v1alpha1.Layout
	// Anvil is the anvil binary that runs the agent; empty means
	// Root/usr/local/bin/anvil (systemd) — the process layout passes
	// os.Executable().
	Anvil             string
	KubernetesVersion string
	// Config is agent.yaml; its paths are host paths (Install puts them
	// under Root in the process layout). It is defaulted and validated.
	Config Config
	// Kubeconfig, when set, is written to Config.Kubeconfig (0600): the
	// node credentials from join's TLS bootstrap, or minted from the CA by
	// init and control-plane join (MintKubeconfig).
	Kubeconfig []byte
	Log        *slog.Logger
}

// InstallResult says what Install did.
type InstallResult struct {
	ConfigFile string
	Kubeconfig string
	// Changed is true when a file changed (and a running agent was
	// restarted to read it).
	Changed bool
}

// Install writes the agent's kubeconfig, agent.yaml and its unit or
// process spec, and starts it in the layout: systemd (enable + start
// through D-Bus) or anvil's supervisor (started detached if none runs
// under Root, told to reload otherwise). Running it again with the same
// input changes nothing; with new input it rewrites what differs and
// restarts the agent. The kubeconfig holds the only credential; nothing
// secret goes into the unit, the spec, the command line or the
// environment.
func Install(ctx context.Context, o InstallOptions) (InstallResult, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Beside a static-pod control plane the agent is a unit, as the
	// kubelet that runs that control plane is.
	o.Layout = node.StackLayout(o.Layout)
	runtimeRoot, err := runtimeRootOf(o.Root, o.Layout)
	if err != nil {
		return InstallResult{}, err
	}
	cfg := o.Config
	cfg.Labels = maps.Clone(cfg.Labels)
	cfg.ContainerRuntimeEndpoints = append([]string(nil), cfg.ContainerRuntimeEndpoints...)
	cfg.Default()
	cfg.ResolvePaths(runtimeRoot)
	if err := cfg.Validate(); err != nil {
		return InstallResult{}, fmt.Errorf("agent configuration for node %s: %w", cfg.NodeName, err)
	}
	res := InstallResult{ConfigFile: o.Root.Path(ConfigFile), Kubeconfig: writePath(o.Root, runtimeRoot, cfg.Kubeconfig)}

	if len(o.Kubeconfig) > 0 {
		if _, err := DecodeKubeconfig(o.Kubeconfig); err != nil {
			return res, fmt.Errorf("kubeconfig for %s: %w", res.Kubeconfig, err)
		}
		out, err := fsutil.EnsureFile(res.Kubeconfig, o.Kubeconfig, 0o600, 0o700)
		if err != nil {
			return res, err
		}
		res.Changed = res.Changed || out != fsutil.Unchanged
	} else if _, err := os.Stat(res.Kubeconfig); err != nil {
		return res, fmt.Errorf("the agent needs its kubeconfig: %w", err)
	}
	out, err := WriteConfig(res.ConfigFile, &cfg)
	if err != nil {
		return res, err
	}
	res.Changed = res.Changed || out != fsutil.Unchanged

	c, err := Component(ComponentOptions{Root: runtimeRoot, AnvilBinary: o.Anvil, KubernetesVersion: o.KubernetesVersion,
		MetricsAddress: cfg.MetricsAddress.String(), PodNetwork: cfg.RunsPodNetwork(), Pods: cfg.RunsPods()})
	if err != nil {
		return res, err
	}
	files, err := renderComponent(c, o.Layout, runtimeRoot)
	if err != nil {
		return res, err
	}
	written, err := component.WriteTree(o.Root, files)
	if err != nil {
		return res, err
	}
	specChanged := false
	for _, w := range written {
		specChanged = specChanged || w.Outcome != fsutil.Unchanged
	}
	lo := layout.Options{Layout: o.Layout, Root: o.Root, Anvil: o.Anvil}
	if o.Anvil == "" {
		lo.Anvil = c.Binary
	}
	if err := layout.Start(ctx, lo, []component.Spec{c}); err != nil {
		return res, fmt.Errorf("start %s: %w", c.UnitName(), err)
	}
	// A changed spec restarts the agent by itself (systemd is told by
	// Start's reload only for new units, so restart there too); changed
	// files behind an unchanged spec need a restart to be read.
	if res.Changed || (specChanged && o.Layout == v1alpha1.LayoutSystemd) {
		if err := restartAgent(ctx, lo, c, specChanged, log); err != nil {
			return res, err
		}
	}
	res.Changed = res.Changed || specChanged
	log.Info("agent installed", "layout", o.Layout, "config", res.ConfigFile, "changed", res.Changed)
	return res, nil
}

// runtimeRootOf is the root the agent's own paths live under: the --root
// in the process layout, "/" for systemd (units and the files they name
// are for the real host even when written under a packaging root).
func runtimeRootOf(root hostfs.Root, l v1alpha1.Layout) (hostfs.Root, error) {
	switch l {
	case v1alpha1.LayoutProcess:
		return root, nil
	case v1alpha1.LayoutSystemd:
		return "", nil
	default:
		return "", fmt.Errorf("unknown layout %q: use systemd or process", l)
	}
}

// writePath is where a runtime path is written from here.
func writePath(root, runtimeRoot hostfs.Root, p string) string {
	if runtimeRoot != "" && runtimeRoot != "/" {
		return p // already under the root
	}
	return root.Path(p)
}

// renderComponent is the agent's unit or process spec, plus the
// directories it needs.
func renderComponent(c component.Spec, l v1alpha1.Layout, runtimeRoot hostfs.Root) ([]component.OutputFile, error) {
	dirs := []component.OutputFile{{Path: StateDir, Mode: fs.ModeDir | 0o700}}
	switch l {
	case v1alpha1.LayoutProcess:
		files, err := component.Processes([]component.Spec{c}, ProcessOptions(runtimeRoot))
		dirs = append(dirs, component.OutputFile{Path: hostfs.LogDir, Mode: fs.ModeDir | 0o700})
		return append(dirs, files...), err
	default:
		files, err := component.Units([]component.Spec{c})
		return append(dirs, files...), err
	}
}

// ProcessOptions is where the supervised agent lives in the process layout:
// the same as the control plane's (master.ProcessOptions), so the spec
// `anvil render` and init write is byte for byte the one Install writes.
func ProcessOptions(root hostfs.Root) component.ProcessOptions {
	return component.ProcessOptions{LogDir: root.Logs(), Dir: root.Path("/")}
}

// restartAgent makes a running agent read its files again. Under the
// supervisor a changed spec is restarted by the supervisor itself.
func restartAgent(ctx context.Context, lo layout.Options, c component.Spec, specChanged bool, log *slog.Logger) error {
	if lo.Layout == v1alpha1.LayoutProcess && specChanged {
		return nil
	}
	log.Info("restarting the agent to read its new files")
	return layout.Restart(ctx, lo, []component.Spec{c})
}
