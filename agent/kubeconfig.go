package agent

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/pki"
)

// Identity of a node's client certificate, as the Node authorizer and
// NodeRestriction expect it.
const (
	NodeUserPrefix = "system:node:"
	NodesGroup     = "system:nodes"
)

// NodeUser is the user name of nodeName's client certificate.
func NodeUser(nodeName string) string { return NodeUserPrefix + nodeName }

// Credentials are what the agent authenticates with: the cluster CA it
// trusts and its client certificate and key, in PEM.
type Credentials struct {
	// Server is the apiserver URL the kubeconfig names.
	Server string
	CAPEM  []byte
	// CertPEM and KeyPEM are the client certificate and its key.
	CertPEM []byte
	KeyPEM  []byte
}

// cert parses the client certificate and key into a tls.Certificate with
// its Leaf set.
func (c Credentials) cert() (*tls.Certificate, error) {
	tc, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return nil, err
	}
	return &tc, nil
}

func (c Credentials) caPool() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CAPEM) {
		return nil, errors.New("no CA certificate")
	}
	return pool, nil
}

// EncodeKubeconfig renders credentials as a kubeconfig with everything
// embedded, in kubeadm's layout (one cluster, one user, context
// user@cluster), so kubectl --kubeconfig works with it too.
func EncodeKubeconfig(clusterName, user string, c Credentials) ([]byte, error) {
	if clusterName == "" {
		clusterName = pki.DefaultClusterName
	}
	ctx := user + "@" + clusterName
	kc := clientcmdapi.NewConfig()
	kc.Clusters[clusterName] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.CAPEM}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: c.CertPEM, ClientKeyData: c.KeyPEM}
	kc.Contexts[ctx] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: user}
	kc.CurrentContext = ctx
	return clientcmd.Write(*kc)
}

// DecodeKubeconfig reads the credentials of a kubeconfig's current
// context; they must be embedded (a node kubeconfig names no other files).
func DecodeKubeconfig(data []byte) (Credentials, error) {
	kc, err := clientcmd.Load(data)
	if err != nil {
		return Credentials{}, err
	}
	ctx := kc.Contexts[kc.CurrentContext]
	if ctx == nil {
		return Credentials{}, fmt.Errorf("current context %q does not exist", kc.CurrentContext)
	}
	cl, ai := kc.Clusters[ctx.Cluster], kc.AuthInfos[ctx.AuthInfo]
	switch {
	case cl == nil:
		return Credentials{}, fmt.Errorf("cluster %q does not exist", ctx.Cluster)
	case ai == nil:
		return Credentials{}, fmt.Errorf("user %q does not exist", ctx.AuthInfo)
	case len(cl.CertificateAuthorityData) == 0:
		return Credentials{}, errors.New("no embedded certificate-authority-data")
	case len(ai.ClientCertificateData) == 0 || len(ai.ClientKeyData) == 0:
		return Credentials{}, errors.New("no embedded client certificate and key")
	}
	return Credentials{Server: cl.Server, CAPEM: cl.CertificateAuthorityData, CertPEM: ai.ClientCertificateData, KeyPEM: ai.ClientKeyData}, nil
}

// ReadKubeconfig reads and checks a node kubeconfig.
func ReadKubeconfig(path string) (Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("read kubeconfig: %w", err)
	}
	c, err := DecodeKubeconfig(b)
	if err != nil {
		return Credentials{}, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	if _, err := c.cert(); err != nil {
		return Credentials{}, fmt.Errorf("kubeconfig %s: client certificate: %w", path, err)
	}
	if _, err := c.caPool(); err != nil {
		return Credentials{}, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return c, nil
}

// writeKubeconfig replaces path atomically, 0600 in a 0700 directory.
func writeKubeconfig(path, nodeName string, c Credentials) error {
	b, err := EncodeKubeconfig("", NodeUser(nodeName), c)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return fsutil.WriteFile(path, b, 0o600, 0o700)
}

// certStore holds the client certificate in use; handshakes read it, and a
// renewal swaps it.
type certStore struct {
	cur atomic.Pointer[tls.Certificate]
}

func (s *certStore) get() *tls.Certificate  { return s.cur.Load() }
func (s *certStore) set(c *tls.Certificate) { s.cur.Store(c) }

// MintOptions describe a node credential made directly from the cluster
// CA, without a CSR: what `anvil init` and control-plane join give the
// agent of a master (they hold the CA key), and what benchmarks give
// simulated nodes.
type MintOptions struct {
	NodeName string
	// Server is the apiserver URL the kubeconfig names.
	Server string
	CACert *x509.Certificate
	CAKey  crypto.Signer
	// Validity is how long the certificate lasts (one year when zero;
	// never beyond the CA).
	Validity time.Duration
	Now      func() time.Time
}

// MintCredentials issues a client certificate for system:node:NodeName in
// group system:nodes, signed by the cluster CA, with a fresh ECDSA P-256
// key — the certificate the CSR signer would issue.
func MintCredentials(o MintOptions) (Credentials, error) {
	if o.NodeName == "" || o.CACert == nil || o.CAKey == nil {
		return Credentials{}, errors.New("mint node credentials: node name, CA certificate and CA key are required")
	}
	key, err := pki.NewKey("")
	if err != nil {
		return Credentials{}, err
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	validity := o.Validity
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	notAfter := now.Add(validity)
	if notAfter.After(o.CACert.NotAfter) {
		notAfter = o.CACert.NotAfter
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return Credentials{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: NodeUser(o.NodeName), Organization: []string{NodesGroup}},
		NotBefore:             now.Add(-5 * time.Minute).UTC(),
		NotAfter:              notAfter.UTC(),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, o.CACert, key.Public(), o.CAKey)
	if err != nil {
		return Credentials{}, fmt.Errorf("sign the client certificate of node %s: %w", o.NodeName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Credentials{}, err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Server: o.Server, CAPEM: pki.EncodeCert(o.CACert), CertPEM: pki.EncodeCert(cert), KeyPEM: keyPEM}, nil
}

// MintKubeconfig is MintCredentials rendered as the agent's kubeconfig.
func MintKubeconfig(o MintOptions) ([]byte, error) {
	c, err := MintCredentials(o)
	if err != nil {
		return nil, err
	}
	return EncodeKubeconfig("", NodeUser(o.NodeName), c)
}
