package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

// KubeletCredentials are what the kubelet authenticates with: a client
// certificate for system:node:NAME, its key, the cluster CA and the
// apiserver it talks to.
type KubeletCredentials struct {
	Server  string
	CAPEM   []byte
	CertPEM []byte
	KeyPEM  []byte
}

// WriteKubeletCredentials lays out the kubelet's credentials the way the
// kubelet keeps them itself, so it takes over their rotation: the pair in
// /var/lib/kubelet/pki/kubelet-client-<time>.pem (0600) with the
// kubelet-client-current.pem symlink pointing at it, the kubeconfig naming
// that symlink, and the cluster CA it checks clients against. Credentials
// the kubelet already holds for the same server and CA are kept (it may
// have rotated them), so running this again changes nothing.
func WriteKubeletCredentials(root hostfs.Root, runtimeRoot hostfs.Root, c KubeletCredentials, now time.Time) (changed bool, err error) {
	current := root.Path(KubeletClientCert)
	kubeconfig, err := kubeletKubeconfig(c.Server, c.CAPEM, runtimeRoot.Path(KubeletClientCert))
	if err != nil {
		return false, err
	}
	if ok, _ := fsutil.Exists(current); ok {
		if b, err := os.ReadFile(root.Path(KubeletKubeconfig)); err == nil && bytes.Equal(b, kubeconfig) {
			return ensureCA(root, c.CAPEM)
		}
	}
	dir := root.Path(KubeletPKIDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	pair := filepath.Join(dir, "kubelet-client-"+now.UTC().Format("2006-01-02-15-04-05")+".pem")
	if err := fsutil.WriteFile(pair, append(append([]byte{}, c.CertPEM...), c.KeyPEM...), 0o600, 0o700); err != nil {
		return false, err
	}
	// The symlink is replaced by rename, as the kubelet's own store does.
	tmp := current + ".anvil-new"
	os.Remove(tmp)
	if err := os.Symlink(runtimeRoot.Path(filepath.Join(KubeletPKIDir, filepath.Base(pair))), tmp); err != nil {
		return false, fmt.Errorf("link %s: %w", current, err)
	}
	if err := os.Rename(tmp, current); err != nil {
		return false, fmt.Errorf("link %s: %w", current, err)
	}
	if err := fsutil.WriteFile(root.Path(KubeletKubeconfig), kubeconfig, 0o600, 0o700); err != nil {
		return false, err
	}
	if _, err := ensureCA(root, c.CAPEM); err != nil {
		return false, err
	}
	return true, nil
}

// ensureCA writes the cluster CA where the kubelet reads it, unless the
// same CA is there (a master's PKI). It is 0600, as package pki writes
// it on masters: CIS 4.1.7 asks that of a node's client CA file, and only
// the kubelet, as root, reads it.
func ensureCA(root hostfs.Root, caPEM []byte) (bool, error) {
	out, err := fsutil.EnsureFile(root.Path(ClusterCAFile), caPEM, 0o600, 0o755)
	return out != fsutil.Unchanged, err
}

// kubeletKubeconfig names the kubelet's current pair for both certificate
// and key, as kubeadm writes it.
func kubeletKubeconfig(server string, caPEM []byte, pair string) ([]byte, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["default"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	kc.AuthInfos["default"] = &clientcmdapi.AuthInfo{ClientCertificate: pair, ClientKey: pair}
	kc.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "default"}
	kc.CurrentContext = "default"
	return clientcmd.Write(*kc)
}
