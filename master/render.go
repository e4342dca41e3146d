package master

import (
	"cmp"
	"fmt"
	"io/fs"
	"os"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
)

// NodeComponents is every component p's node runs in layout, in start
// order: on a master the control plane, then (except in the static-pod
// layout) the node agent, which every node runs.
//
// In the static-pod layout this is what the kubelet runs; the agent, like
// the kubelet and containerd, is a systemd unit beside it (node.StackLayout),
// which init and join write.
func NodeComponents(p Plan, layout v1alpha1.Layout) ([]component.Spec, error) {
	p, err := p.Complete()
	if err != nil {
		return nil, err
	}
	var out []component.Spec
	if p.Node.IsMaster() {
		if out, err = Components(p); err != nil {
			return nil, err
		}
	}
	if layout != v1alpha1.LayoutStaticPod {
		a, err := agent.Component(agent.ComponentOptions{
			Root:              p.Root,
			AnvilBinary:       p.AnvilBinary,
			KubernetesVersion: p.KubernetesVersion,
			// As the agent phase configures it (agent.Config's default
			// network is host-gw).
			PodNetwork: p.Node.Runtime == v1alpha1.RuntimeContainerd &&
				cmp.Or(p.Cluster.Networking.Network, v1alpha1.PodNetworkHostGW) == v1alpha1.PodNetworkHostGW,
			Pods: p.Node.Runtime == v1alpha1.RuntimeContainerd,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// RenderNode is the whole tree `anvil render` writes for p's node in
// layout: one unit, manifest or process spec per component, then the
// control plane's config files and the directories the components write
// to. Paths are host paths; write them under a root with
// component.WriteTree, or compare with component.DiffTree. read supplies
// what is already there (see ConfigFiles).
func RenderNode(p Plan, layout v1alpha1.Layout, read ReadFunc) ([]component.OutputFile, error) {
	p, err := p.Complete()
	if err != nil {
		return nil, err
	}
	cs, err := NodeComponents(p, layout)
	if err != nil {
		return nil, err
	}
	var out []component.OutputFile
	switch layout {
	case v1alpha1.LayoutSystemd:
		out, err = component.Units(cs)
	case v1alpha1.LayoutStaticPod:
		out, err = component.StaticPods(cs)
	case v1alpha1.LayoutProcess:
		out, err = component.Processes(cs, ProcessOptions(p))
		out = append(out, component.OutputFile{Path: hostfs.LogDir, Mode: fs.ModeDir | 0o700})
	default:
		return nil, fmt.Errorf("unknown layout %q: use one of %v", layout, v1alpha1.Layouts())
	}
	if err != nil {
		return nil, err
	}
	if p.Node.IsMaster() {
		files, err := ConfigFiles(p, read)
		if err != nil {
			return nil, err
		}
		out = append(out, files...)
		for _, units := range []func(Plan, v1alpha1.Layout) ([]component.OutputFile, error){BackupScheduleUnits, RenewScheduleUnits} {
			timer, err := units(p, layout)
			if err != nil {
				return nil, err
			}
			out = append(out, timer...)
		}
	}
	return out, nil
}

// ProcessOptions is where the process layout's supervised processes live:
// logs in Root/var/log/anvil/NAME.log, working directory the root itself.
func ProcessOptions(p Plan) component.ProcessOptions {
	return component.ProcessOptions{LogDir: p.Root.Logs(), Dir: p.Root.Path("/")}
}

// RenderOptions are the inputs of `anvil render`.
type RenderOptions struct {
	// Cluster is the loaded (defaulted, validated) cluster file.
	Cluster *v1alpha1.Cluster
	// Node is this machine's name in it.
	Node   string
	Layout v1alpha1.Layout
	// Root is where the tree is written or compared. It is the runtime root
	// too only in the process layout (see Plan.Root).
	Root hostfs.Root
	// AnvilBinary is anvil's executable for the process layout, usually
	// os.Executable(); the other layouts always run /usr/local/bin/anvil.
	AnvilBinary string
	// Diff compares with what is under Root instead of writing.
	Diff bool
}

// RenderResult is what Render did.
type RenderResult struct {
	// Written lists every path and what happened to it (not for Diff).
	Written []component.Written
	// Diff is the unified diff (only for Diff); Changed says whether there
	// is any difference.
	Diff    string
	Changed bool
}

// Render writes (or diffs) the node's whole tree under o.Root: units,
// manifests or process specs, the control plane's config files and the
// directories they need. Writing is idempotent and keeps an existing
// encryption key.
func Render(o RenderOptions) (RenderResult, error) {
	if o.Cluster == nil {
		return RenderResult{}, fmt.Errorf("render: no cluster")
	}
	h, ok := o.Cluster.Host(o.Node)
	if !ok {
		return RenderResult{}, fmt.Errorf("node %q is not in the cluster file", o.Node)
	}
	p := Plan{Cluster: o.Cluster, Node: h}
	if o.Layout == v1alpha1.LayoutProcess {
		p.Root, p.AnvilBinary = o.Root, o.AnvilBinary
	}
	read := func(hostPath string) ([]byte, error) { return os.ReadFile(o.Root.Path(hostPath)) }
	files, err := RenderNode(p, o.Layout, read)
	if err != nil {
		return RenderResult{}, err
	}
	if o.Diff {
		d, changed, err := component.DiffTree(o.Root, files)
		return RenderResult{Diff: d, Changed: changed}, err
	}
	w, err := component.WriteTree(o.Root, files)
	return RenderResult{Written: w}, err
}
