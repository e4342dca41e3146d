package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
)

// A node's part of a CA rotation (package pki describes the stages): what
// it trusts (the kubelet's and kube-proxy's kubeconfig, the kubelet's
// client CA file, the agent's kubeconfig) follows the cluster CA bundle
// the masters publish in cluster-info at the trust and drop stages; at the
// reissue stage its client certificate is issued again by the new CA and
// the kubelet asks for a new serving certificate. The kubelet, kube-proxy
// and the agent are restarted to read what changed.

// RotateCAOptions are RotateCA's.
type RotateCAOptions struct {
	Root  hostfs.Root
	Stage string
	// Bundle is the CA bundle to trust at the trust and drop stages; nil
	// reads it from cluster-info with the node's credentials (a worker). A
	// master passes its own ca.crt.
	Bundle []byte
	// Mint, on a master, issues the node's client certificate from the CA
	// on disk; nil asks the cluster for one (a CSR, as a renewal does).
	Mint func(nodeName string) (certPEM, keyPEM []byte, err error)
	// Layout is the agent's where the node stack's is not recorded (a
	// node with runtime none); empty is systemd.
	Layout v1alpha1.Layout
	Log    *slog.Logger
}

// RotateCAResult is what RotateCA did on one node.
type RotateCAResult struct {
	Node      string   `json:"node"`
	Stage     string   `json:"stage"`
	Changed   []string `json:"changed,omitempty"`
	Restarted []string `json:"restarted,omitempty"`
	// Trusts are the CAs the node trusts afterwards, by CA hash.
	Trusts []string `json:"trusts"`
}

// RotateCA does this node's part of a CA rotation stage. Done again it
// changes nothing.
func RotateCA(ctx context.Context, o RotateCAOptions) (*RotateCAResult, error) {
	if !slices.Contains(pki.RotateStages(), o.Stage) {
		return nil, fmt.Errorf("unknown stage %q: use one of %v", o.Stage, pki.RotateStages())
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := LoadConfig(o.Root.Path(ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("not a node anvil joined: %w", err)
	}
	st, err := node.ReadStackState(o.Root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	res := &RotateCAResult{Node: cfg.NodeName, Stage: o.Stage}
	creds, err := ReadKubeconfig(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cli, err := credsClient(cfg, creds, "anvil-rotate-ca")
	if err != nil {
		return nil, err
	}
	defer cli.close()

	next := creds
	bundle := o.Bundle
	if bundle == nil {
		if bundle, err = publishedBundle(ctx, cfg, creds); err != nil {
			return nil, err
		}
	}
	if err := checkBundle(o.Stage, creds.CAPEM, bundle); err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.NodeName, err)
	}
	next.CAPEM = bundle
	if o.Stage == pki.RotateReissue {
		signer, err := signingCA(bundle)
		if err != nil {
			return nil, err
		}
		leaf, err := creds.cert()
		switch {
		case err == nil && leaf.Leaf.CheckSignatureFrom(signer) == nil && kubeletSignedBy(o.Root, signer):
			// Issued by the new CA already.
		case o.Mint != nil:
			next.CertPEM, next.KeyPEM, err = o.Mint(cfg.NodeName)
		default:
			next.CertPEM, next.KeyPEM, err = requestCert(ctx, cli, cfg.NodeName, log)
		}
		if err != nil {
			return nil, fmt.Errorf("node %s: a client certificate from the new CA: %w", cfg.NodeName, err)
		}
	}

	// The agent's kubeconfig.
	if !bytes.Equal(next.CAPEM, creds.CAPEM) || !bytes.Equal(next.CertPEM, creds.CertPEM) {
		if err := writeKubeconfig(cfg.Kubeconfig, cfg.NodeName, next); err != nil {
			return nil, err
		}
		res.Changed = append(res.Changed, cfg.Kubeconfig)
	}
	// The kubelet's, when this node runs one.
	restart := []component.Spec{{Name: Name, Unit: Unit}}
	if st != nil {
		signer, err := signingCA(bundle)
		if err != nil {
			return nil, err
		}
		// A serving certificate of the old CA is asked for again once the
		// new CA signs: at the reissue stage on a worker (every master signs
		// with the new CA by then), at the drop stage on a master (whose
		// kubelet may have been served by a controller-manager not yet
		// switched).
		renewServing := o.Stage != pki.RotateTrust && !servingSignedBy(o.Root, signer)
		changed, err := rotateKubelet(o, st, next, o.Stage == pki.RotateReissue && !bytes.Equal(next.CertPEM, creds.CertPEM), renewServing)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", cfg.NodeName, err)
		}
		res.Changed = append(res.Changed, changed...)
		restart = []component.Spec{{Name: node.Kubelet}, {Name: node.KubeProxy}, {Name: Name, Unit: Unit}}
	}
	if certs, err := pki.ParseCerts(next.CAPEM); err == nil {
		for _, c := range certs {
			res.Trusts = append(res.Trusts, pki.CAHashOf(c).String())
		}
	}
	// What changed is restarted, also when an earlier run changed it and
	// stopped before its restarts (the pending mark).
	pending := o.Root.Path(RotationRestartFile)
	if len(res.Changed) == 0 {
		if _, err := os.Stat(pending); err != nil {
			return res, nil
		}
	} else if err := fsutil.WriteFile(pending, []byte(o.Stage+"\n"), 0o600, 0o700); err != nil {
		return res, err
	}
	l := o.Layout
	if st != nil {
		l = node.StackLayout(st.Layout)
	}
	for _, s := range restart {
		if err := layout.Restart(ctx, layout.Options{Layout: l, Root: o.Root}, []component.Spec{s}); err != nil {
			return res, fmt.Errorf("node %s: restart %s: %w", cfg.NodeName, s.Name, err)
		}
		res.Restarted = append(res.Restarted, s.Name)
		log.Info("restarted", "component", s.Name)
	}
	if err := os.Remove(pending); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	return res, nil
}

// RotationRestartFile marks a node whose CA rotation changed files its
// components have not been restarted to read yet.
const RotationRestartFile = hostfs.StateDir + "/ca-rotation-node-restart"

// credsClient is an API client with the node's credentials.
func credsClient(cfg *Config, creds Credentials, agent string) (*apiClient, error) {
	tc, err := creds.cert()
	if err != nil {
		return nil, err
	}
	pool, err := creds.caPool()
	if err != nil {
		return nil, err
	}
	return newAPIClient(clientOptions{Servers: cfg.Servers, CAs: pool, ClientCert: func() *tls.Certificate { return tc },
		UserAgent: agent + " (" + cfg.NodeName + ")"})
}

// publishedBundle is the cluster CA bundle cluster-info publishes, read
// over a connection the node's current trust checked. cluster-info is
// readable anonymously only (the Node authorizer denies it to a node), so
// no client certificate is sent.
func publishedBundle(ctx context.Context, cfg *Config, creds Credentials) ([]byte, error) {
	pool, err := creds.caPool()
	if err != nil {
		return nil, err
	}
	cli, err := newAPIClient(clientOptions{Servers: cfg.Servers, CAs: pool, UserAgent: "anvil-rotate-ca (" + cfg.NodeName + ")"})
	if err != nil {
		return nil, err
	}
	defer cli.close()
	var cm corev1.ConfigMap
	if err := cli.do(ctx, "GET", clusterInfoURLPath, "", nil, &cm); err != nil {
		return nil, fmt.Errorf("read the cluster CA bundle (ConfigMap kube-public/cluster-info): %w", err)
	}
	_, certs, err := parseClusterInfo(cm.Data[bootstrapapi.KubeConfigKey])
	if err != nil {
		return nil, fmt.Errorf("cluster-info: %w", err)
	}
	var b []byte
	for _, c := range certs {
		b = append(b, pki.EncodeCert(c)...)
	}
	return b, nil
}

// checkBundle refuses a bundle that would cut the node off: at the trust
// stage it must keep every CA trusted now and add one; at the drop stage
// it must be one CA trusted now.
func checkBundle(stage string, current, bundle []byte) error {
	cur, err := pki.ParseCerts(current)
	if err != nil {
		return err
	}
	next, err := pki.ParseCerts(bundle)
	if err != nil {
		return fmt.Errorf("the published CA bundle: %w", err)
	}
	switch stage {
	case pki.RotateTrust:
		for _, c := range cur {
			if !slices.ContainsFunc(next, c.Equal) {
				return errors.New("the published CA bundle leaves out a CA this node trusts: the masters are not at the trust stage (anvil cluster rotate-ca runs them first)")
			}
		}
	case pki.RotateReissue:
		if len(next) != len(cur) || slices.ContainsFunc(cur, func(c *x509.Certificate) bool { return !slices.ContainsFunc(next, c.Equal) }) {
			return errors.New("the published CA bundle is not the one this node trusts since the trust stage: run the trust stage here first")
		}
	case pki.RotateDrop:
		if len(next) != 1 || !slices.ContainsFunc(cur, next[0].Equal) {
			return fmt.Errorf("the published CA bundle holds %d CAs, not one this node trusts already: the masters have not dropped the old CA yet", len(next))
		}
	}
	return nil
}

// signingCA is the first CA of a bundle: the one the masters sign with
// after the reissue stage.
func signingCA(bundle []byte) (*x509.Certificate, error) {
	certs, err := pki.ParseCerts(bundle)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// kubeletSignedBy says whether the kubelet's client certificate, if this
// node has one, is signed by ca.
func kubeletSignedBy(root hostfs.Root, ca *x509.Certificate) bool {
	b, err := os.ReadFile(root.Path(node.KubeletClientCert))
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	certs, err := pki.ParseCerts(b)
	return err == nil && certs[0].CheckSignatureFrom(ca) == nil
}

// kubeletServingCert is the kubelet's current serving pair.
const kubeletServingCert = node.KubeletPKIDir + "/kubelet-server-current.pem"

// servingSignedBy says whether the kubelet's serving certificate is signed
// by ca; true when there is none (it is being asked for).
func servingSignedBy(root hostfs.Root, ca *x509.Certificate) bool {
	b, err := os.ReadFile(root.Path(kubeletServingCert))
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	certs, err := pki.ParseCerts(b)
	return err == nil && certs[0].CheckSignatureFrom(ca) == nil
}

// requestCert asks the cluster for a node client certificate: a CSR made
// with the node's current certificate, as a renewal is.
func requestCert(ctx context.Context, cli *apiClient, nodeName string, log *slog.Logger) ([]byte, []byte, error) {
	key, err := pki.NewKey("")
	if err != nil {
		return nil, nil, err
	}
	certPEM, err := requestNodeCertificate(ctx, cli, csrRequest{NodeName: nodeName, Key: key, Wait: 3 * time.Minute, Log: log})
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := pki.EncodeKey(key)
	return certPEM, keyPEM, err
}

// rotateKubelet has the kubelet trust next.CAPEM and, when reissued, use
// next's certificate; a new serving certificate is asked for at the next
// start by removing the current one.
func rotateKubelet(o RotateCAOptions, st *node.StackState, next Credentials, reissued, renewServing bool) ([]string, error) {
	runtimeRoot, err := runtimeRootOf(o.Root, node.StackLayout(st.Layout))
	if err != nil {
		return nil, err
	}
	kc, err := clientcmd.LoadFromFile(o.Root.Path(node.KubeletKubeconfig))
	if err != nil {
		return nil, fmt.Errorf("read the kubelet's kubeconfig: %w", err)
	}
	ctx := kc.Contexts[kc.CurrentContext]
	if ctx == nil || kc.Clusters[ctx.Cluster] == nil {
		return nil, fmt.Errorf("%s names no cluster", o.Root.Path(node.KubeletKubeconfig))
	}
	server := kc.Clusters[ctx.Cluster].Server
	certPEM, keyPEM := next.CertPEM, next.KeyPEM
	if !reissued {
		// Keep the pair the kubelet holds (it may have rotated it).
		pair, err := os.ReadFile(o.Root.Path(node.KubeletClientCert))
		if err != nil {
			return nil, fmt.Errorf("read the kubelet's client certificate: %w", err)
		}
		certPEM, keyPEM = pair, nil
	}
	var changed []string
	before, _ := os.ReadFile(o.Root.Path(node.KubeletKubeconfig))
	if _, err := node.WriteKubeletCredentials(o.Root, runtimeRoot, node.KubeletCredentials{Server: server, CAPEM: next.CAPEM, CertPEM: certPEM, KeyPEM: keyPEM}, time.Now()); err != nil {
		return nil, err
	}
	if after, _ := os.ReadFile(o.Root.Path(node.KubeletKubeconfig)); !bytes.Equal(before, after) || reissued {
		changed = append(changed, o.Root.Path(node.KubeletKubeconfig))
	}
	if renewServing {
		serving := o.Root.Path(kubeletServingCert)
		if err := os.Remove(serving); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		changed = append(changed, serving)
	}
	return changed, nil
}
