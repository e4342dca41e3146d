package agent

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/node"
)

// The node stack's side of a worker join (runtime containerd): the
// node-config phase reads what every node of the cluster shares, the
// tls-bootstrap phase gets the kubelet its own certificate, the node phase
// installs and starts containerd and the kubelet.

// ErrNoNodeConfig is a cluster whose masters never published the node
// settings (ConfigMap kube-system/anvil-node-config).
var ErrNoNodeConfig = errors.New("the cluster publishes no node settings")

// nodeConfigPath is the ConfigMap the masters publish the node settings in.
const nodeConfigPath = "/api/v1/namespaces/" + node.ClusterConfigNamespace + "/configmaps/" + node.ClusterConfigMap

// nodeSetup is what the node phase installs.
type nodeSetup struct {
	cc   node.ClusterConfig
	plan node.Plan
	// kubelet are the kubelet's credentials; kubeletHasCredentials says
	// an earlier join left the kubelet some (it may have rotated them).
	kubelet               node.KubeletCredentials
	kubeletHasCredentials bool
}

// joinNodeConfig reads the node settings, with the token from the
// endpoint discovery verified (or, joined already, with the node's own
// certificate), and works out the node's plan; it writes nothing.
func joinNodeConfig(ctx context.Context, j *joinRun) error {
	cli, err := j.nodeConfigClient()
	if err != nil {
		return err
	}
	defer cli.close()
	var cm corev1.ConfigMap
	where := node.ClusterConfigNamespace + "/" + node.ClusterConfigMap
	switch err := cli.do(ctx, "GET", nodeConfigPath, "", nil, &cm); {
	case isNotFound(err), isForbidden(err):
		return fmt.Errorf("%w: ConfigMap %s is not there or not readable with the token (%v): the masters' anvil predates the node stack; upgrade it and run `anvil init phase bootstrap` on a master, or join with --runtime none",
			ErrNoNodeConfig, where, err)
	case err != nil:
		return fmt.Errorf("read the node settings (ConfigMap %s): %w", where, err)
	}
	cc, err := node.ParseClusterConfigMap(&cm)
	if err != nil {
		return err
	}
	if v := j.o.KubernetesVersion; v != "" && v != cc.KubernetesVersion {
		return fmt.Errorf("the cluster runs Kubernetes %s and this machine was given %s", cc.KubernetesVersion, v)
	}
	runtimeRoot, err := runtimeRootOf(j.o.Root, j.o.Layout)
	if err != nil {
		return err
	}
	nodeIP := j.o.NodeIP
	if !nodeIP.IsValid() {
		_, ips, err := netFacts(netip.Addr{})
		if err != nil {
			return fmt.Errorf("the kubelet's node IP: %w (pass --node-ip)", err)
		}
		nodeIP = ips[0]
	}
	host := v1alpha1.Host{Name: j.o.NodeName, Role: v1alpha1.RoleWorker, InternalAddress: nodeIP,
		Labels: kubeletLabels(j.o.Labels), Taints: j.o.Taints, Runtime: v1alpha1.RuntimeContainerd}
	p, err := node.Plan{Cluster: cc.Cluster(), Host: host, Root: runtimeRoot, KubernetesVersion: cc.KubernetesVersion,
		NodeIP: nodeIP, Facts: node.ReadFacts(j.o.Root)}.Complete()
	if err != nil {
		return err
	}
	// Missing binaries fail here, before anything is written.
	for _, b := range []string{images.Containerd, images.Kubelet, images.Ctr} {
		path := writePath(j.o.Root, runtimeRoot, filepath.Join(p.BinDir, b))
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("runtime containerd needs %s of Kubernetes %s: %w (install the worker payload: anvil images install --role worker, or join with --runtime none)", b, cc.KubernetesVersion, err)
		}
	}
	j.node = &nodeSetup{cc: cc, plan: p}
	j.node.kubeletHasCredentials, j.node.kubelet, err = existingKubeletCredentials(j)
	if err != nil {
		return err
	}
	j.o.Task.Say("node settings: Kubernetes %s, pod CIDR %s, network %s, node IP %s", cc.KubernetesVersion, cc.PodCIDR, cc.Network, nodeIP)
	return nil
}

// nodeConfigClient reads with the token from the verified endpoint, or
// with the node's certificate when an earlier join left one (the
// ConfigMap is readable by nodes too).
func (j *joinRun) nodeConfigClient() (*apiClient, error) {
	if j.joined {
		return j.nodeClient()
	}
	return j.bootstrapClient()
}

// kubeletLabels are the labels the kubelet may set itself
// (NodeRestriction); it refuses to start with others.
func kubeletLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if SelfSettableLabel(k) {
			out[k] = v
		}
	}
	return out
}

// existingKubeletCredentials reads the pair the kubelet uses now, which it
// may have rotated since an earlier join; node.Install keeps it.
func existingKubeletCredentials(j *joinRun) (bool, node.KubeletCredentials, error) {
	b, err := os.ReadFile(j.o.Root.Path(node.KubeletClientCert))
	if errors.Is(err, os.ErrNotExist) {
		return false, node.KubeletCredentials{}, nil
	}
	if err != nil {
		return false, node.KubeletCredentials{}, fmt.Errorf("the kubelet's credentials: %w", err)
	}
	var certPEM, keyPEM []byte
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			certPEM = append(certPEM, pem.EncodeToMemory(blk)...)
		} else {
			keyPEM = append(keyPEM, pem.EncodeToMemory(blk)...)
		}
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		// A damaged pair: get the kubelet a new one.
		return false, node.KubeletCredentials{}, nil
	}
	return true, node.KubeletCredentials{CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// kubeletCertificateFromNode gets the kubelet of a machine joined earlier
// (with runtime none, or before the node stack) a certificate, asked for
// with the node's own: the controller-manager approves a node's CSR for
// itself as it approves a renewal.
func (j *joinRun) kubeletCertificateFromNode(ctx context.Context) error {
	if j.node == nil {
		return nil
	}
	j.node.kubelet.Server, j.node.kubelet.CAPEM = j.creds.Server, j.creds.CAPEM
	if j.node.kubeletHasCredentials {
		return nil
	}
	cli, err := j.nodeClient()
	if err != nil {
		return err
	}
	defer cli.close()
	certPEM, keyPEM, err := requestKeyAndCertificate(ctx, cli, j.o.NodeName, j.o.CSRTimeout, j.log)
	if err != nil {
		return fmt.Errorf("the kubelet's certificate: %w", err)
	}
	j.node.kubelet.CertPEM, j.node.kubelet.KeyPEM = certPEM, keyPEM
	j.o.Task.Say("kubelet client certificate for %s issued", NodeUser(j.o.NodeName))
	return nil
}

// joinNode installs and starts containerd and the kubelet; a second run
// with the same input changes nothing.
func joinNode(ctx context.Context, j *joinRun) error {
	res, err := node.Install(ctx, node.InstallOptions{
		Plan: j.node.plan, Layout: j.o.Layout, Root: j.o.Root, Anvil: j.o.Anvil,
		Kubelet: j.node.kubelet, Timeout: j.o.ReadyTimeout, Log: j.log, Task: j.o.Task,
	})
	if err != nil {
		return err
	}
	if res.Changed {
		j.o.Task.Say("containerd and the kubelet (Kubernetes %s) installed and started", j.node.plan.KubernetesVersion)
	}
	return nil
}

func planNode(ctx context.Context, j *joinRun) error {
	p := j.node.plan
	j.plan("node", "write containerd's config, the KubeletConfiguration (cgroup driver %s, cluster DNS from %s) and the kubelet's credentials, import the image archives, start containerd and the kubelet %s (node IP %s)",
		p.Facts.CgroupDriver(), j.node.cc.ServiceCIDR, p.KubernetesVersion, p.NodeIP)
	return nil
}
