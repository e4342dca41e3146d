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
	"anvil.dev/anvil/pki"
)

// ControlPlaneLabel and ControlPlaneTaint mark a master's Node, as kubeadm
// marks it.
const (
	ControlPlaneLabel = "node-role.kubernetes.io/control-plane"
	ControlPlaneTaint = "node-role.kubernetes.io/control-plane"
)

// agentPhase installs and starts the node agent on this master, with node
// credentials minted from the cluster CA (a master holds the CA key, so it
// needs no TLS bootstrap), so masters show up in `kubectl get nodes`.
func agentPhase(ctx context.Context, r *initRun) error {
	caCert, caKey, err := readCA(r.o.Root.PKI())
	if err != nil {
		return err
	}
	local := "https://" + net.JoinHostPort(r.plan.AdvertiseAddress.String(), strconv.Itoa(int(r.o.Cluster.ControlPlane.Port)))
	kc, err := agent.MintKubeconfig(agent.MintOptions{NodeName: r.o.Node, Server: local, CACert: caCert, CAKey: caKey})
	if err != nil {
		return err
	}
	cfg := agent.Config{
		NodeName: r.o.Node,
		Role:     r.plan.Node.Role,
		Servers:  r.apiServers(local),
		NodeIP:   r.plan.AdvertiseAddress,
		Labels:   r.plan.Node.Labels,
		Taints:   r.plan.Node.Taints,
	}
	_, err = agent.Install(ctx, agent.InstallOptions{
		Root: r.o.Root, Layout: r.o.Layout, Anvil: r.o.Anvil, KubernetesVersion: r.plan.KubernetesVersion,
		Config: cfg, Kubeconfig: kc, Log: r.log,
	})
	return err
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

// markControlPlanePhase labels and taints this master's Node once its agent
// has registered it: NodeRestriction forbids a node to give itself the
// control-plane role, so an administrator does it.
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
			return fmt.Errorf("node %s was not registered within %s: is anvil agent running? (%s)", r.o.Node, r.o.Timeout, r.o.Root.Path(agent.ConfigFile))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
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
