package master

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/addons"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
)

// ApplyAddons applies the cluster add-ons c asks for (cluster DNS: CoreDNS
// and the kube-dns Service, when some host runs pods) by server-side
// apply, forwarding names outside the cluster only when there are
// upstreams, then moves a CoreDNS replica that shares a node to one that
// runs none (addons.Spread). It returns what changed; with dryRun, what
// would, changing nothing.
func ApplyAddons(ctx context.Context, cs kubernetes.Interface, c *v1alpha1.Cluster, upstreams []string, dryRun bool) ([]string, error) {
	objs, err := addons.DNSObjects(c.Defaulted(), addons.DNSOptions{Forward: len(upstreams) > 0})
	if err != nil || len(objs) == 0 {
		return nil, err
	}
	changed, err := addons.Apply(ctx, cs, objs, dryRun)
	if err != nil {
		return changed, err
	}
	moved, err := addons.Spread(ctx, cs, dryRun)
	return append(changed, moved...), err
}

// LocalUpstreams are this machine's resolvers as its pods would see them
// (/proc and /etc are never under a --root): what cluster DNS forwards to.
func LocalUpstreams() []string {
	resolv, _ := os.ReadFile(node.ReadFacts("").ResolvConf)
	return node.Upstreams(resolv)
}

// ReapplyAddons applies the add-ons again from this master, as init did:
// from the cluster file it keeps, with its resolvers, through its
// admin.conf. `anvil addons apply` runs it; with dryRun it is the drift
// `anvil status` reports.
func ReapplyAddons(ctx context.Context, root hostfs.Root, dryRun bool) ([]string, error) {
	st, p, err := installedMaster(root, "add-ons are applied from a master")
	if err != nil {
		return nil, err
	}
	return reapplyAddons(ctx, root, Plan{Cluster: p.Cluster, Node: p.Node, KubernetesVersion: st.KubernetesVersion}, dryRun)
}

// installedMaster reads what init or join left on this master: its node
// state and its Plan from the cluster file it keeps. On a worker it says
// why not with onWorker.
func installedMaster(root hostfs.Root, onWorker string) (*NodeState, Plan, error) {
	st, err := ReadNodeState(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Plan{}, ErrNotInitialized
	}
	if err != nil {
		return nil, Plan{}, err
	}
	if st.Role != v1alpha1.RoleMaster {
		return nil, Plan{}, fmt.Errorf("node %s is a %s: %s", st.Node, st.Role, onWorker)
	}
	c, _, err := v1alpha1.Load(root.Path(ClusterFile))
	if err != nil {
		return nil, Plan{}, err
	}
	h, ok := c.Host(st.Node)
	if !ok {
		return nil, Plan{}, fmt.Errorf("node %q is not in %s", st.Node, root.Path(ClusterFile))
	}
	return st, Plan{Cluster: c, Node: h, KubernetesVersion: st.KubernetesVersion}, nil
}

func reapplyAddons(ctx context.Context, root hostfs.Root, p Plan, dryRun bool) ([]string, error) {
	cp := &ControlPlane{Plan: p, Root: root}
	cs, err := cp.Client(pki.AdminKubeconfig)
	if err != nil {
		return nil, err
	}
	return ApplyAddons(ctx, cs, p.Cluster, LocalUpstreams(), dryRun)
}
