package master

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
)

// An upgrade switches this master from the Kubernetes version it runs to
// another whose binaries are already installed beside the old ones
// (/opt/anvil/bin/<version>; `anvil cluster apply` uploads them):
//
//  1. The version skew policy is checked (images.CheckUpgrade), the new
//     tree verified, and etcd must be healthy: every member a voter that
//     answers, no alarm.
//  2. The components whose definition (unit, static-pod manifest or
//     process spec) depends on the version are switched one at a time, in
//     start order, each ready before the next: the apiserver, the
//     controller-manager, the scheduler. The VIP is handed to another
//     master first, as a renewal does, so clients of the VIP never wait
//     on this master's apiserver.
//  3. The node stack (the kubelet, kube-proxy) follows, as the skew policy
//     wants it: never newer than the control plane. The agent is last.
//  4. etcd must be healthy again, and the controller-manager and the
//     scheduler hold their leases. Then the node state and the cluster
//     file this master keeps name the new version, and the cluster's
//     published settings too, so that nodes joining later get it.
//
// The old binaries stay: switching back is the same run with the old
// version (Rollback). A run that stopped half-way is run again: what is
// already switched is left as it is, and the node state changes last.

// UpgradeOptions are Upgrade's.
type UpgradeOptions struct {
	Root hostfs.Root
	// Version is the Kubernetes version to run.
	Version string
	// Rollback allows going back one minor: undoing an upgrade.
	Rollback bool
	// Force goes on with etcd members that do not answer (a master down),
	// as long as more than half do.
	Force bool
	// Timeout bounds each component's wait for ready; zero is 3 minutes.
	Timeout time.Duration
	Log     *slog.Logger
	Task    *progress.Task
}

// UpgradeResult is what Upgrade did.
type UpgradeResult struct {
	Node string `json:"node"`
	From string `json:"from"`
	To   string `json:"to"`
	// Switched are the components switched to To, in order.
	Switched []string `json:"switched,omitempty"`
	// Restarted are the components restarted because they ran a replaced
	// binary (a new anvil uploaded), in order.
	Restarted []string `json:"restarted,omitempty"`
	// Took is the whole run's time.
	Took time.Duration `json:"took"`
}

// Upgrade switches this master to o.Version (see above).
func Upgrade(ctx context.Context, o UpgradeOptions) (*UpgradeResult, error) {
	start := time.Now()
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	st, p, err := installedMaster(o.Root, "master.Upgrade switches a master; a worker is switched by agent.Upgrade (anvil upgrade picks the right one)")
	if err != nil {
		return nil, err
	}
	if st.Layout == v1alpha1.LayoutProcess {
		p.Root = o.Root
	}
	res := &UpgradeResult{Node: st.Node, From: st.KubernetesVersion, To: o.Version}
	if res.From == res.To && st.UpgradingTo == "" {
		// Finished before; what may be left is anvil itself: daemons
		// still running the anvil an apply has since replaced.
		cur, err := p.Complete()
		if err != nil {
			return nil, err
		}
		cp := &ControlPlane{Plan: cur, Layout: st.Layout, Root: o.Root, Anvil: cur.AnvilBinary, Log: log, Task: o.Task}
		res.Restarted, err = cp.restartReplaced(ctx, o.Force, log)
		res.Took = time.Since(start)
		return res, err
	}
	if err := images.CheckUpgrade(res.From, res.To, o.Rollback); err != nil {
		return nil, err
	}
	// The other version on this machine: the one it ran, or, when an
	// unfinished upgrade is undone, the one that upgrade switched to.
	other := st.KubernetesVersion
	if st.UpgradingTo != "" && st.UpgradingTo != o.Version {
		other = st.UpgradingTo
		if err := images.CheckUpgrade(other, o.Version, o.Rollback); err != nil {
			return nil, fmt.Errorf("%s was being switched to %s: %w", st.Node, other, err)
		}
	}
	if _, _, err := images.Installed(o.Root, o.Version); err != nil {
		return nil, fmt.Errorf("node %[2]s: Kubernetes %[1]s is not installed: %[3]w (anvil cluster apply uploads it; on the host: anvil images install)", o.Version, st.Node, err)
	}
	p.KubernetesVersion = other
	oldPlan, err := p.Complete()
	if err != nil {
		return nil, err
	}
	p.KubernetesVersion, p.BinDir = o.Version, ""
	newPlan, err := p.Complete()
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{Plan: newPlan, Layout: st.Layout, Root: o.Root, Anvil: newPlan.AnvilBinary, Log: log, Task: o.Task}
	switches, agentSwitch, err := upgradeSwitches(o.Root, oldPlan, newPlan, st.Layout)
	if err != nil {
		return nil, err
	}
	if err := etcdHealthy(ctx, o.Root, "before", o.Force); err != nil {
		return nil, err
	}
	// Recorded before anything switches: a run that stops half-way is
	// seen as unfinished, by the next run here and by cluster apply.
	begun := *st
	begun.UpgradingTo = o.Version
	if err := WriteNodeState(o.Root, begun); err != nil {
		return nil, err
	}
	o.Task.Say("%s: Kubernetes %s → %s: switch %s", st.Node, res.From, res.To, switchNames(switches, agentSwitch))
	if st.Layout == v1alpha1.LayoutStaticPod && newPlan.Node.Runtime == v1alpha1.RuntimeContainerd {
		// The new control-plane images, in containerd before a manifest
		// names them.
		if err := importStaticPodImages(ctx, o.Root, cp, newPlan); err != nil {
			return nil, err
		}
	}
	if err := cp.switchAll(ctx, switches, o.Timeout, log, &res.Switched); err != nil {
		return res, err
	}
	if newPlan.Node.Runtime == v1alpha1.RuntimeContainerd {
		if err := upgradeNodeStack(ctx, o, cp, newPlan); err != nil {
			return res, err
		}
		res.Switched = append(res.Switched, node.Kubelet)
	}
	if agentSwitch != nil {
		if err := cp.switchAll(ctx, []componentSwitch{*agentSwitch}, o.Timeout, log, &res.Switched); err != nil {
			return res, err
		}
	}
	// What the version did not change but a new anvil did: etcd, the
	// approver, the VIP manager running the anvil the links left.
	if res.Restarted, err = cp.restartReplaced(ctx, o.Force, log); err != nil {
		return res, err
	}
	if err := cp.WaitLeaders(ctx, o.Timeout); err != nil {
		return res, err
	}
	if err := etcdHealthy(ctx, o.Root, "after", o.Force); err != nil {
		return res, err
	}
	if err := recordVersion(ctx, o.Root, cp, st, o.Version); err != nil {
		return res, err
	}
	res.Took = time.Since(start)
	return res, nil
}

// restartReplaced restarts this master's components whose process runs a
// replaced binary (layout.Replaced): the way anvil itself is upgraded, an
// apply having put a new anvil in place. One at a time, each ready before
// the next, Kubernetes' components first, then anvil's own with etcd and
// the agent last; the VIP handed to another master first (its manager
// starts again at the end); etcd healthy before and after its member
// restarts.
func (c *ControlPlane) restartReplaced(ctx context.Context, force bool, log *slog.Logger) ([]string, error) {
	replaced, err := replacedComponents(ctx, c.Plan, c.Layout, c.Root)
	if err != nil {
		return nil, fmt.Errorf("find the components that run a replaced binary: %w", err)
	}
	if len(replaced) == 0 {
		return nil, nil
	}
	slices.SortStableFunc(replaced, func(a, b component.Spec) int { return cmp.Compare(restartRank(a), restartRank(b)) })
	var names []string
	for _, s := range replaced {
		names = append(names, s.Name)
	}
	c.Task.Say("%s: %s run a replaced binary: restarting them one at a time", c.Plan.Node.Name, strings.Join(names, ", "))
	etcdToo := slices.ContainsFunc(replaced, func(s component.Spec) bool { return s.Name == Etcd })
	if etcdToo && !slices.ContainsFunc(replaced, func(s component.Spec) bool { return s.Name == VIP }) {
		// This master's apiserver talks to its own member alone: the VIP
		// goes elsewhere while it restarts (restartInTurn hands it over).
		if vips, err := c.Components(VIP); err == nil && len(vips) == 1 {
			replaced = append(replaced, vips[0])
		}
	}
	if etcdToo {
		if err := etcdHealthy(ctx, c.Root, "before", force); err != nil {
			return nil, err
		}
	}
	restarted, err := c.restartInTurn(ctx, replaced, log)
	if err != nil {
		return restarted, err
	}
	if etcdToo {
		if err := etcdHealthy(ctx, c.Root, "after", force); err != nil {
			return restarted, err
		}
	}
	return restarted, nil
}

// replacedComponents are p's node's components (the control plane's and
// the agent) whose process runs a replaced binary. In the static-pod
// layout the kubelet runs the control plane from images, and only the
// agent's unit is looked at.
func replacedComponents(ctx context.Context, p Plan, l v1alpha1.Layout, root hostfs.Root) ([]component.Spec, error) {
	lo := layout.Options{Layout: l, Root: root}
	if l == v1alpha1.LayoutStaticPod {
		lo.Layout = v1alpha1.LayoutSystemd
	}
	cs, err := NodeComponents(p, lo.Layout)
	if err != nil {
		return nil, err
	}
	if l == v1alpha1.LayoutStaticPod {
		cs = slices.DeleteFunc(cs, func(s component.Spec) bool { return s.Name != agent.Name })
	}
	return layout.Replaced(ctx, lo, cs)
}

// restartRank orders restarts: Kubernetes' components, anvil's, etcd, the
// agent.
func restartRank(s component.Spec) int {
	switch {
	case s.Name == agent.Name:
		return 3
	case s.Name == Etcd:
		return 2
	case isAnvil(s):
		return 1
	}
	return 0
}

// componentSwitch is one component's definition file, old and new.
type componentSwitch struct {
	spec component.Spec
	file component.OutputFile
}

// upgradeSwitches are the components whose definition the version changes
// and which do not run the new one yet, in start order, Kubernetes' before
// anvil's; the agent apart, since it goes last.
func upgradeSwitches(root hostfs.Root, oldPlan, newPlan Plan, layout v1alpha1.Layout) ([]componentSwitch, *componentSwitch, error) {
	olds, _, err := definitions(oldPlan, layout)
	if err != nil {
		return nil, nil, err
	}
	news, ordered, err := definitions(newPlan, layout)
	if err != nil {
		return nil, nil, err
	}
	var out []componentSwitch
	var last *componentSwitch
	for _, s := range ordered {
		f := news[s.Name]
		// The agent's unit is held to its rendering even where the
		// version does not change it: one written by join names the
		// versioned anvil it ran, and a restart would run that again.
		if s.Name != agent.Name && bytes.Equal(f.Data, olds[s.Name].Data) {
			continue // the version does not change it
		}
		if cur, err := os.ReadFile(root.Path(f.Path)); err == nil && bytes.Equal(cur, f.Data) {
			continue // switched by an earlier run
		}
		sw := componentSwitch{spec: s, file: f}
		if s.Name == agent.Name {
			last = &sw
			continue
		}
		out = append(out, sw)
	}
	// Kubernetes' components first; anvil's own (etcd, the approver and
	// the VIP manager, which run the anvil image in the static-pod layout)
	// after them.
	slices.SortStableFunc(out, func(a, b componentSwitch) int {
		return cmp.Compare(b2i(isAnvil(a.spec)), b2i(isAnvil(b.spec)))
	})
	return out, last, nil
}

func isAnvil(s component.Spec) bool {
	return path.Base(s.Image.Binary) == images.AnvilBinary || path.Base(s.Binary) == images.AnvilBinary
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// definitions renders each of p's components' definition file in layout,
// by component name, and the components in start order.
func definitions(p Plan, layout v1alpha1.Layout) (map[string]component.OutputFile, []component.Spec, error) {
	cs, err := NodeComponents(p, layout)
	if err != nil {
		return nil, nil, err
	}
	ordered, err := component.StartOrder(cs)
	if err != nil {
		return nil, nil, err
	}
	var files []component.OutputFile
	switch layout {
	case v1alpha1.LayoutSystemd:
		files, err = component.Units(cs)
	case v1alpha1.LayoutStaticPod:
		files, err = component.StaticPods(cs)
	case v1alpha1.LayoutProcess:
		files, err = component.Processes(cs, ProcessOptions(p))
	default:
		err = fmt.Errorf("unknown layout %q", layout)
	}
	if err != nil {
		return nil, nil, err
	}
	out := map[string]component.OutputFile{}
	for i, s := range ordered {
		out[s.Name] = files[i]
	}
	return out, ordered, nil
}

func switchNames(sw []componentSwitch, agent *componentSwitch) string {
	var names []string
	for _, s := range sw {
		names = append(names, s.spec.Name)
	}
	names = append(names, "the node stack")
	if agent != nil {
		names = append(names, agent.spec.Name)
	}
	return fmt.Sprint(names)
}

// switchAll switches each component in turn, each ready before the next.
// When the apiserver is among them and this master runs the VIP manager,
// the VIP goes to another master first and its manager starts again last.
func (c *ControlPlane) switchAll(ctx context.Context, sw []componentSwitch, timeout time.Duration, log *slog.Logger, done *[]string) error {
	if len(sw) == 0 {
		return nil
	}
	if c.Layout != v1alpha1.LayoutStaticPod && slices.ContainsFunc(sw, func(s componentSwitch) bool { return s.spec.Name == APIServer }) {
		if vips, err := c.Components(VIP); err == nil && len(vips) == 1 {
			if err := c.handOverVIP(ctx, vips[0], log); err != nil {
				return err
			}
			defer func() {
				if err := c.Start(ctx, vips); err != nil {
					log.Error("start the VIP manager again", "err", err)
				} else if err := c.WaitReady(ctx, vips, time.Minute); err != nil {
					log.Error("the VIP manager is not ready again", "err", err)
				}
			}()
		}
	}
	for _, s := range sw {
		began := time.Now()
		if err := c.switchOne(ctx, s, timeout); err != nil {
			return fmt.Errorf("switch %s to Kubernetes %s: %w", s.spec.Name, c.Plan.KubernetesVersion, err)
		}
		*done = append(*done, s.spec.Name)
		c.Task.Say("%s: %s runs Kubernetes %s (%s)", c.Plan.Node.Name, s.spec.Name, c.Plan.KubernetesVersion, time.Since(began).Round(10*time.Millisecond))
	}
	return nil
}

// switchOne writes s's new definition and has the layout run it: systemd
// restarts the unit; the kubelet, whose static pod is taken away until its
// ports close, runs the new manifest; the supervisor restarts a process
// whose spec changed. Then s must be ready.
func (c *ControlPlane) switchOne(ctx context.Context, s componentSwitch, timeout time.Duration) error {
	write := func() error {
		_, err := component.WriteTree(c.Root, []component.OutputFile{s.file})
		return err
	}
	switch c.Layout {
	case v1alpha1.LayoutStaticPod:
		manifest := c.Root.Path(s.file.Path)
		if err := os.Remove(manifest); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		gone := waitUntil(ctx, 90*time.Second, "the kubelet to stop "+s.spec.Name, func() bool {
			running, _ := c.Running([]component.Spec{s.spec})
			return len(running) == 0
		})
		// Written whatever the wait said: a master is never left without
		// the manifest.
		if err := write(); err != nil {
			return err
		}
		if gone != nil {
			return gone
		}
	case v1alpha1.LayoutProcess:
		if err := write(); err != nil {
			return err
		}
		if err := c.restartProcess(ctx, s.spec); err != nil {
			return err
		}
	default:
		if err := write(); err != nil {
			return err
		}
		o := c.LayoutOptions()
		o.Layout = v1alpha1.LayoutSystemd // the static-pod layout's units too
		if err := layout.Restart(ctx, o, []component.Spec{s.spec}); err != nil {
			return err
		}
	}
	return c.WaitReady(ctx, []component.Spec{s.spec}, timeout)
}

// importStaticPodImages makes and imports the new control-plane images.
func importStaticPodImages(ctx context.Context, root hostfs.Root, cp *ControlPlane, p Plan) error {
	cs, err := cp.Components()
	if err != nil {
		return err
	}
	archives, err := staticPodImages(root, cs, p.BinDir, p.AnvilBinary, cp.Task)
	if err != nil {
		return err
	}
	imp, err := node.ImportImages(ctx, node.ImportOptions{Root: root, Ctr: path.Join(p.BinDir, images.Ctr), Address: p.Root.Path(node.ContainerdSocket), Files: archives})
	if err != nil {
		return err
	}
	if len(imp.Problems) > 0 {
		return errors.Join(imp.Problems...)
	}
	return nil
}

// upgradeNodeStack has node.Install rewrite the kubelet's and kube-proxy's
// definitions for the new binaries and restart them; the kubelet keeps
// its credentials.
func upgradeNodeStack(ctx context.Context, o UpgradeOptions, cp *ControlPlane, p Plan) error {
	var archives []string
	if cp.Layout == v1alpha1.LayoutStaticPod {
		cs, err := cp.Components()
		if err != nil {
			return err
		}
		if archives, err = staticPodImages(o.Root, cs, p.BinDir, p.AnvilBinary, o.Task); err != nil {
			return err
		}
	}
	_, err := node.Install(ctx, node.InstallOptions{
		Plan: masterNodePlan(p, node.ReadFacts("")), Layout: cp.Layout, Root: o.Root, Anvil: p.AnvilBinary,
		Images: archives, KeepCredentials: true, Timeout: o.Timeout, Log: o.Log, Task: o.Task,
	})
	if err != nil {
		return fmt.Errorf("node stack of %s: %w", p.Node.Name, err)
	}
	return nil
}

// etcdHealthy checks etcd through this master's member.
func etcdHealthy(ctx context.Context, root hostfs.Root, when string, force bool) error {
	cli, err := etcd.Dial(ctx, root)
	if err != nil {
		return fmt.Errorf("etcd %s the upgrade: %w", when, err)
	}
	defer cli.Close()
	check := etcd.CheckHealthy
	if force {
		check = etcd.CheckQuorate
	}
	if err := check(ctx, cli); err != nil {
		return fmt.Errorf("%s the upgrade: %w", when, err)
	}
	return nil
}

// recordVersion writes the new version into this master's node state and
// cluster file, and into the cluster's published settings (the cluster
// file joining masters read, the node settings joining workers read).
func recordVersion(ctx context.Context, root hostfs.Root, cp *ControlPlane, st *NodeState, version string) error {
	c := *cp.Plan.Cluster
	c.KubernetesVersion = version
	b, err := yaml.Marshal(&c)
	if err != nil {
		return err
	}
	cs, err := cp.Client(pki.AdminKubeconfig)
	if err != nil {
		return err
	}
	if err := publishVersion(ctx, cs, &c); err != nil {
		return fmt.Errorf("publish Kubernetes %s in the cluster's settings: %w", version, err)
	}
	if err := fsutil.WriteFile(root.Path(ClusterFile), b, 0o600, 0o700); err != nil {
		return err
	}
	next := *st
	next.KubernetesVersion, next.UpgradingTo = version, ""
	return WriteNodeState(root, next)
}

// publishVersion updates the cluster file in the anvil ConfigMap (keeping
// its other keys) and the node settings.
func publishVersion(ctx context.Context, cs kubernetes.Interface, c *v1alpha1.Cluster) error {
	clusterFile, err := PublishedClusterFile(c)
	if err != nil {
		return err
	}
	cms := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem)
	cur, err := cms.Get(ctx, ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if cur.Data == nil {
		cur.Data = map[string]string{}
	}
	if cur.Data[ConfigMapKey] != string(clusterFile) {
		cur.Data[ConfigMapKey] = string(clusterFile)
		if _, err := cms.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	// Init publishes the node settings when the cluster runs pods.
	switch _, err := cs.CoreV1().ConfigMaps(node.ClusterConfigNamespace).Get(ctx, node.ClusterConfigMap, metav1.GetOptions{}); {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	return ensureNodeConfig(ctx, cs, node.ClusterConfigOf(c))
}
