package master

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
)

// ControlPlaneLabel and ControlPlaneTaint mark a master's Node, as kubeadm
// marks it.
const (
	ControlPlaneLabel = "node-role.kubernetes.io/control-plane"
	ControlPlaneTaint = "node-role.kubernetes.io/control-plane"
)

// The descriptions of the phases init and control-plane join share.
const (
	nodePhaseHelp    = "with runtime containerd: start containerd and the kubelet (its own credentials from the CA, the control-plane taint)"
	agentPhaseHelp   = "install and start the node agent, with node credentials from the CA (the pod network where the kubelet runs)"
	kubeletPhaseHelp = "static-pod layout only: start containerd and the kubelet, with an image of each control-plane binary, so the kubelet runs the control plane from its manifests"
	markPhaseHelp    = "wait for this master's Node, then label and taint it as control plane"
)

// runsPods reports whether this master runs the node stack (containerd
// and the kubelet), as its host entry says.
func (r *initRun) runsPods() bool { return r.plan.Node.Runtime == v1alpha1.RuntimeContainerd }

// localAPIServer is this master's own apiserver, which its kubelet and
// agent talk to first.
func (r *initRun) localAPIServer() string {
	return "https://" + net.JoinHostPort(r.plan.AdvertiseAddress.String(), strconv.Itoa(int(r.o.Cluster.ControlPlane.Port)))
}

// nodePhase makes this master a node that runs pods when its host says
// runtime: containerd: containerd and the kubelet, the kubelet with a client
// certificate of its own minted from the cluster CA (a key apart from the
// agent's: each identity can be revoked or rotated alone), registering its
// Node with the control-plane taint so that workloads stay off masters
// unless they tolerate it. The control-plane label is mark-control-plane's:
// NodeRestriction forbids a kubelet to set it. With runtime: none it does
// nothing and the agent keeps the Node itself. In the static-pod layout
// the kubelet phase did all this before the control plane started.
func nodePhase(ctx context.Context, r *initRun) error {
	if !r.runsPods() || r.o.Layout == v1alpha1.LayoutStaticPod {
		return nil
	}
	return r.installNode(ctx, nil)
}

// kubeletPhase, in the static-pod layout only, starts containerd and the
// kubelet before the control plane, since the kubelet is what runs it: it
// imports an image of each control-plane binary (made here from the
// verified binaries, so nothing more is uploaded) and starts the kubelet,
// which runs the manifests the config phase wrote. Until the apiserver
// serves, the kubelet runs them unregistered; then it registers its Node
// and their mirror pods.
func kubeletPhase(ctx context.Context, r *initRun) error {
	if r.o.Layout != v1alpha1.LayoutStaticPod {
		return nil
	}
	if !r.runsPods() {
		return fmt.Errorf("host %s: the static-pod layout runs the control plane in the kubelet, but the host says runtime: %s: set runtime: %s or use the systemd layout",
			r.o.Node, r.plan.Node.Runtime, v1alpha1.RuntimeContainerd)
	}
	cs, err := Components(r.plan)
	if err != nil {
		return err
	}
	archives, err := staticPodImages(r.o.Root, cs, r.plan.BinDir, r.o.Anvil, r.o.Task)
	if err != nil {
		return err
	}
	return r.installNode(ctx, archives)
}

// installNode installs and starts the node stack with the kubelet's
// credentials minted from the CA, importing archives besides the images
// the release ships.
func (r *initRun) installNode(ctx context.Context, archives []string) error {
	caCert, caKey, err := readCA(r.o.Root.PKI())
	if err != nil {
		return err
	}
	local := r.localAPIServer()
	creds, err := agent.MintCredentials(agent.MintOptions{NodeName: r.o.Node, Server: local, CACert: caCert, CAKey: caKey})
	if err != nil {
		return err
	}
	// The facts of this machine: /proc and /sys are never under a --root
	// directory.
	plan := r.nodePlan(node.ReadFacts(""))
	cs, err := node.Components(plan)
	if err != nil {
		return err
	}
	// Recorded before Install starts anything, so a failure half-way
	// still stops what did start.
	r.nodeStarted = cs
	res, err := node.Install(ctx, node.InstallOptions{
		Plan: plan, Layout: r.o.Layout, Root: r.o.Root, Anvil: r.o.Anvil, Images: archives,
		Kubelet: node.KubeletCredentials{Server: local, CAPEM: pki.EncodeCert(caCert), CertPEM: creds.CertPEM, KeyPEM: creds.KeyPEM},
		Timeout: r.o.Timeout, Log: r.log, Task: r.o.Task,
	})
	if err != nil {
		return fmt.Errorf("node %s: %w", r.o.Node, err)
	}
	r.log.Debug("node stack installed", "changed", res.Changed, "imported", len(res.Imported), "warnings", len(res.Warnings))
	return nil
}

// nodePlan is this master's node stack: its host entry with the
// control-plane taint added, its advertise address, its binaries.
func (r *initRun) nodePlan(facts node.Facts) node.Plan { return masterNodePlan(r.plan, facts) }

// masterNodePlan is the node stack of the master p plans (complete).
func masterNodePlan(p Plan, facts node.Facts) node.Plan {
	host := p.Node
	host.Taints = slices.Clone(host.Taints)
	if !slices.ContainsFunc(host.Taints, func(t v1alpha1.Taint) bool { return t.Key == ControlPlaneTaint }) {
		host.Taints = append(host.Taints, v1alpha1.Taint{Key: ControlPlaneTaint, Effect: v1alpha1.NoSchedule})
	}
	return node.Plan{
		Cluster: p.Cluster, Host: host, Root: p.Root,
		KubernetesVersion: p.KubernetesVersion, BinDir: p.BinDir,
		NodeIP: p.AdvertiseAddress, Facts: facts,
	}
}

// agentPhase installs and starts the node agent on this master, with node
// credentials minted from the cluster CA (a master holds the CA key, so it
// needs no TLS bootstrap). On a master that runs pods the kubelet keeps
// the Node and the agent runs the pod network; on one that does not the
// agent registers the Node itself, so every master shows up in `kubectl
// get nodes`.
func agentPhase(ctx context.Context, r *initRun) error {
	caCert, caKey, err := readCA(r.o.Root.PKI())
	if err != nil {
		return err
	}
	local := r.localAPIServer()
	kc, err := agent.MintKubeconfig(agent.MintOptions{NodeName: r.o.Node, Server: local, CACert: caCert, CAKey: caKey})
	if err != nil {
		return err
	}
	_, err = agent.Install(ctx, agent.InstallOptions{
		Root: r.o.Root, Layout: r.o.Layout, Anvil: r.o.Anvil, KubernetesVersion: r.plan.KubernetesVersion,
		Config: r.agentConfig(local), Kubeconfig: kc, Log: r.log,
	})
	return err
}

// agentConfig is this master's agent.yaml: with runtime containerd the
// agent runs the pod network and leaves the Node to the kubelet.
func (r *initRun) agentConfig(local string) agent.Config {
	cfg := agent.Config{
		NodeName: r.o.Node,
		Role:     r.plan.Node.Role,
		Servers:  r.apiServers(local),
		NodeIP:   r.plan.AdvertiseAddress,
		Labels:   r.plan.Node.Labels,
		Taints:   r.plan.Node.Taints,
	}
	if r.runsPods() {
		cfg.Runtime = v1alpha1.RuntimeContainerd
		cfg.Network = r.o.Cluster.Networking.Network
		cfg.PodCIDR = r.o.Cluster.Networking.PodCIDR
		cfg.ServiceCIDR = r.o.Cluster.Networking.ServiceCIDR
		cfg.ContainerRuntimeEndpoints = []string{node.ContainerdSocket}
		// The same directory node.Plan uses (Plan.Complete set it): ctr
		// imports image archives.
		cfg.BinDir = r.plan.BinDir
	}
	return cfg
}

// apiServers is where this master's agent goes: its own apiserver first,
// then every other master, then the cluster endpoint (which may be a VIP
// or a load balancer), so it keeps heartbeating through the loss of any.
func (r *initRun) apiServers(local string) []string {
	out := []string{local}
	for _, u := range r.o.Cluster.MasterURLs() {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	if ep := r.o.Cluster.APIServerURL(); !slices.Contains(out, ep) {
		out = append(out, ep)
	}
	return out
}

// markControlPlanePhase labels and taints this master's Node once its
// kubelet or its agent has registered it: NodeRestriction forbids a node
// to give itself the control-plane role, so an administrator does it. The
// wait is bounded by the run's timeout.
func markControlPlanePhase(ctx context.Context, r *initRun) error {
	cs, err := r.cp.Client(pki.AdminKubeconfig)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(r.o.Timeout)
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, r.o.Node, metav1.GetOptions{})
		if err == nil {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			changed := false
			if _, ok := n.Labels[ControlPlaneLabel]; !ok {
				n.Labels[ControlPlaneLabel] = ""
				changed = true
			}
			if !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == ControlPlaneTaint }) {
				n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: ControlPlaneTaint, Effect: corev1.TaintEffectNoSchedule})
				changed = true
			}
			if !changed {
				return nil
			}
			if _, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err == nil {
				return nil
			}
			if !apierrors.IsConflict(err) {
				return fmt.Errorf("mark node %s: %w", r.o.Node, err)
			}
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("read node %s: %w", r.o.Node, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for Node %s to be registered by %s", r.o.Timeout, r.o.Node, r.nodeRegistrar())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// nodeRegistrar names what registers this master's Node, and where to
// look when it does not.
func (r *initRun) nodeRegistrar() string {
	if !r.runsPods() {
		return "anvil agent (" + r.o.Root.Path(agent.ConfigFile) + ")"
	}
	if node.StackLayout(r.o.Layout) == v1alpha1.LayoutProcess {
		return "its kubelet (" + filepath.Join(r.o.Root.Logs(), node.Kubelet+".log") + ")"
	}
	return "its kubelet (journalctl -u " + node.Kubelet + ")"
}

func readCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	cert, err := pki.ReadCertFile(filepath.Join(dir, pki.CertFile(pki.CACertAndKeyBaseName)))
	if err != nil {
		return nil, nil, err
	}
	key, err := pki.ReadKeyFile(filepath.Join(dir, pki.KeyFile(pki.CACertAndKeyBaseName)))
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
