package installer

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/pki"
)

// adminKubeconfigOnHost is the admin kubeconfig init writes on a master.
const adminKubeconfigOnHost = hostfs.KubernetesDir + "/" + pki.AdminKubeconfig

// clusterAccess is the cluster as a master's admin kubeconfig reaches it,
// with every API connection made from that master over its SSH
// connection: it works through bastions and needs no route from the
// workstation to the apiserver.
type clusterAccess struct {
	// admin is the admin kubeconfig as the master holds it.
	admin  []byte
	caHash pki.CAHash
	client kubernetes.Interface

	mu      sync.Mutex
	nodes   map[string]nodeState
	fetched time.Time
	err     error
}

// nodeState is what the cluster says of one Node.
type nodeState struct {
	Ready bool
	// Reason is the Ready condition's reason and message when not Ready.
	Reason string
	// Starting is a taint a starting node carries until it can run pods
	// (not-ready, no-runtime, …); empty once it has none. A user's own
	// taints are not counted.
	Starting string
}

// startingTaints are the taints a node carries while it comes up.
func startingTaints() []string {
	return []string{
		corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable, corev1.TaintNodeNetworkUnavailable,
		"node.cloudprovider.kubernetes.io/uninitialized", agent.NoRuntimeTaintKey,
	}
}

// newClusterAccess reads the admin kubeconfig on the master c reaches.
func newClusterAccess(ctx context.Context, c *sshx.Client) (*clusterAccess, error) {
	admin, err := c.OutputAsRoot(ctx, "cat "+adminKubeconfigOnHost)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", adminKubeconfigOnHost, err)
	}
	cfg, err := clientcmd.Load(admin)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", adminKubeconfigOnHost, err)
	}
	var caData []byte
	for _, cl := range cfg.Clusters {
		caData = cl.CertificateAuthorityData
		break
	}
	block, _ := pem.Decode(caData)
	if block == nil {
		return nil, fmt.Errorf("%s has no certificate-authority-data", adminKubeconfigOnHost)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: CA certificate: %w", adminKubeconfigOnHost, err)
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(admin)
	if err != nil {
		return nil, err
	}
	rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return c.DialContext(ctx, "tcp", addr)
	}
	rc.Timeout = 15 * time.Second
	rc.QPS, rc.Burst = 20, 40
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &clusterAccess{admin: admin, caHash: pki.CAHashOf(ca), client: cs}, nil
}

// nodeStates lists the Nodes, at most once per half second however many
// hosts wait on them.
func (a *clusterAccess) nodeStates(ctx context.Context) (map[string]nodeState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.fetched.IsZero() && time.Since(a.fetched) < 500*time.Millisecond {
		return a.nodes, a.err
	}
	list, err := a.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	a.fetched = time.Now()
	if err != nil {
		a.nodes, a.err = nil, fmt.Errorf("list nodes: %w", err)
		return nil, a.err
	}
	a.nodes, a.err = map[string]nodeState{}, nil
	for _, n := range list.Items {
		st := nodeState{Reason: "no Ready condition yet"}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				st.Ready = c.Status == corev1.ConditionTrue
				st.Reason = c.Reason
				if c.Message != "" {
					st.Reason += ": " + c.Message
				}
			}
		}
		for _, t := range n.Spec.Taints {
			if slices.Contains(startingTaints(), t.Key) {
				st.Starting = t.Key
			}
		}
		a.nodes[n.Name] = st
	}
	return a.nodes, nil
}

// access is the cluster through the primary, made on first use.
func (r *run) access(ctx context.Context) (*clusterAccess, error) {
	r.accessMu.Lock()
	defer r.accessMu.Unlock()
	if r.acc != nil {
		return r.acc, nil
	}
	p := r.primary
	if p == nil || p.failed() || p.client == nil {
		return nil, errNoControlPlane(p)
	}
	acc, err := newClusterAccess(ctx, p.client)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Name, err)
	}
	r.acc = acc
	return acc, nil
}

// errNoControlPlane says why there is no control plane to join.
func errNoControlPlane(p *host) error {
	if p == nil {
		return errors.New("no control plane: no master is initialised and the first master could not be looked at")
	}
	var he *HostError
	if errors.As(p.err, &he) {
		return fmt.Errorf("no control plane: %s failed in %s", p.Name, he.Phase)
	}
	return fmt.Errorf("no control plane: %s is not reachable", p.Name)
}
