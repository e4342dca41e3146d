package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/node"
)

// UpgradeOptions are Upgrade's.
type UpgradeOptions struct {
	Root hostfs.Root
	// Version is the Kubernetes version the node stack is to run.
	Version string
	// Rollback allows going back one minor: undoing an upgrade.
	Rollback bool
	// Anvil runs the process layout's supervisor.
	Anvil   string
	Timeout time.Duration
	Log     *slog.Logger
	Task    *progress.Task
}

// UpgradeResult is what Upgrade did.
type UpgradeResult struct {
	Node     string   `json:"node"`
	From     string   `json:"from"`
	To       string   `json:"to"`
	Switched []string `json:"switched,omitempty"`
	// Restarted names the agent when it was restarted because it ran a
	// replaced anvil.
	Restarted []string      `json:"restarted,omitempty"`
	Took      time.Duration `json:"took"`
}

// ErrNoStackState means the node stack's version is not recorded here: a
// node with runtime none, or one set up by an anvil that did not record it.
var ErrNoStackState = errors.New("the node stack's Kubernetes version is not recorded on this machine")

// Upgrade switches this worker's node stack (the kubelet and kube-proxy)
// to o.Version, whose binaries are installed beside the old ones, and then
// the agent: the plan join made, from the agent's configuration and the
// node settings the cluster publishes, with the new version. The kubelet
// keeps its credentials. Whoever runs it has drained the node (anvil
// cluster apply does); a finished upgrade run again does nothing.
func Upgrade(ctx context.Context, o UpgradeOptions) (*UpgradeResult, error) {
	start := time.Now()
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	cfg, err := LoadConfig(o.Root.Path(ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("not a node anvil joined: %w", err)
	}
	st, err := node.ReadStackState(o.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("node %s: %w (%s is missing): a node with runtime none has no kubelet to upgrade; one joined by an older anvil is joined again after anvil reset", cfg.NodeName, ErrNoStackState, o.Root.Path(node.StackStateFile))
	}
	if err != nil {
		return nil, err
	}
	res := &UpgradeResult{Node: cfg.NodeName, From: st.KubernetesVersion, To: o.Version}
	if res.From == res.To && st.UpgradingTo == "" {
		// Finished before; the agent may still run the anvil an apply
		// has since replaced.
		res.Restarted, err = restartReplaced(ctx, o, cfg, st.Layout, res.To)
		res.Took = time.Since(start)
		return res, err
	}
	if err := images.CheckUpgrade(res.From, res.To, o.Rollback); err != nil {
		return nil, err
	}
	if st.UpgradingTo != "" && st.UpgradingTo != o.Version {
		if err := images.CheckUpgrade(st.UpgradingTo, o.Version, o.Rollback); err != nil {
			return nil, fmt.Errorf("%s was being switched to %s: %w", cfg.NodeName, st.UpgradingTo, err)
		}
	}
	if _, _, err := images.Installed(o.Root, o.Version); err != nil {
		return nil, fmt.Errorf("node %[2]s: Kubernetes %[1]s is not installed: %[3]w (anvil cluster apply uploads it; on the host: anvil images install --role worker)", o.Version, cfg.NodeName, err)
	}
	cc, err := readNodeSettings(ctx, cfg)
	if err != nil {
		return nil, err
	}
	runtimeRoot, err := runtimeRootOf(o.Root, st.Layout)
	if err != nil {
		return nil, err
	}
	host := v1alpha1.Host{Name: cfg.NodeName, Role: v1alpha1.RoleWorker, InternalAddress: cfg.NodeIP,
		Labels: kubeletLabels(cfg.Labels), Taints: cfg.Taints, Runtime: v1alpha1.RuntimeContainerd}
	p := node.Plan{Cluster: cc.Cluster(), Host: host, Root: runtimeRoot, KubernetesVersion: o.Version, NodeIP: cfg.NodeIP, Facts: node.ReadFacts(o.Root)}
	// Recorded before anything changes; Install writes the finished state.
	begun := *st
	begun.UpgradingTo = o.Version
	if err := node.WriteStackState(o.Root, begun); err != nil {
		return nil, err
	}
	o.Task.Say("%s: Kubernetes %s → %s: the kubelet and kube-proxy, then the agent", cfg.NodeName, res.From, res.To)
	if _, err := node.Install(ctx, node.InstallOptions{
		Plan: p, Layout: st.Layout, Root: o.Root, Anvil: o.Anvil, KeepCredentials: true,
		Timeout: o.Timeout, Log: o.Log, Task: o.Task,
	}); err != nil {
		return res, fmt.Errorf("node stack of %s: %w", cfg.NodeName, err)
	}
	res.Switched = append(res.Switched, node.Kubelet, node.KubeProxy)
	ir, err := Install(ctx, InstallOptions{Root: o.Root, Layout: st.Layout, Anvil: o.Anvil, KubernetesVersion: o.Version, Config: *cfg, Log: o.Log})
	if err != nil {
		return res, fmt.Errorf("agent of %s: %w", cfg.NodeName, err)
	}
	if ir.Changed {
		res.Switched = append(res.Switched, Name)
	} else if res.Restarted, err = restartReplaced(ctx, o, cfg, st.Layout, o.Version); err != nil {
		return res, err
	}
	res.Took = time.Since(start)
	return res, nil
}

// readNodeSettings reads the node settings the cluster publishes, with
// the node's own credentials.
func readNodeSettings(ctx context.Context, cfg *Config) (node.ClusterConfig, error) {
	creds, err := ReadKubeconfig(cfg.Kubeconfig)
	if err != nil {
		return node.ClusterConfig{}, err
	}
	tc, err := creds.cert()
	if err != nil {
		return node.ClusterConfig{}, err
	}
	pool, err := creds.caPool()
	if err != nil {
		return node.ClusterConfig{}, err
	}
	cli, err := newAPIClient(clientOptions{Servers: cfg.Servers, CAs: pool, ClientCert: func() *tls.Certificate { return tc },
		UserAgent: "anvil-upgrade (" + cfg.NodeName + ")"})
	if err != nil {
		return node.ClusterConfig{}, err
	}
	defer cli.close()
	var cm corev1.ConfigMap
	if err := cli.do(ctx, "GET", nodeConfigPath, "", nil, &cm); err != nil {
		return node.ClusterConfig{}, fmt.Errorf("read the node settings (ConfigMap %s/%s): %w", node.ClusterConfigNamespace, node.ClusterConfigMap, err)
	}
	return node.ParseClusterConfigMap(&cm)
}

// restartReplaced restarts the agent when its process runs a replaced
// anvil (layout.Replaced): the way anvil itself is upgraded on a worker,
// an apply having put a new anvil in place. It returns what it restarted.
func restartReplaced(ctx context.Context, o UpgradeOptions, cfg *Config, l v1alpha1.Layout, version string) ([]string, error) {
	l = node.StackLayout(l)
	runtimeRoot, err := runtimeRootOf(o.Root, l)
	if err != nil {
		return nil, err
	}
	cc := *cfg
	cc.Default()
	c, err := Component(ComponentOptions{Root: runtimeRoot, AnvilBinary: o.Anvil, KubernetesVersion: version,
		MetricsAddress: cc.MetricsAddress.String(), PodNetwork: cc.RunsPodNetwork(), Pods: cc.RunsPods()})
	if err != nil {
		return nil, err
	}
	lo := layout.Options{Layout: l, Root: o.Root, Anvil: o.Anvil}
	replaced, err := layout.Replaced(ctx, lo, []component.Spec{c})
	if err != nil {
		return nil, fmt.Errorf("find whether the agent runs a replaced anvil: %w", err)
	}
	if len(replaced) == 0 {
		return nil, nil
	}
	o.Task.Say("%s: the agent runs a replaced anvil: restarting it", cfg.NodeName)
	if err := layout.Restart(ctx, lo, replaced); err != nil {
		return nil, fmt.Errorf("restart %s: %w", c.UnitName(), err)
	}
	return []string{Name}, nil
}
