package pki

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// server is the apiserver URL a kubeconfig points at.
func (c Config) server(spec KubeconfigSpec) string {
	if spec.Local && c.LocalAPIServerURL != "" {
		return c.LocalAPIServerURL
	}
	return c.APIServerURL
}

// kubeconfig applies kubeadm's rule: write it if missing, keep it if it
// matches (same CA, same server, a valid client certificate for the right
// user), refuse if it is stale unless forced. With renew it gets a new
// client certificate whatever its state, unless it belongs to another CA.
func (p *planner) kubeconfig(spec KubeconfigSpec, renew bool) error {
	path := filepath.Join(p.opts.KubeconfigDir, spec.Name)
	f, err := readFile(path)
	if err != nil {
		return err
	}
	if spec.OnDemand && !f.exists() && !p.opts.SuperAdmin {
		return nil
	}
	ca := p.cas[CAName]
	if ca.cert == nil {
		return fmt.Errorf("cannot issue %s: CA %s does not exist", path, ca.certPath)
	}
	server := p.cfg.server(spec)
	res := Result{Name: spec.Name, Path: path, Action: Created}
	if f.exists() {
		kc, err := clientcmd.Load(f.Data)
		if err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
		reason, foreign := staleKubeconfig(kc, spec, ca, server, p.now)
		switch {
		case foreign && !p.opts.Force:
			return fmt.Errorf("%s is stale (%s): %w", path, reason, ErrNeedsForce)
		case renew:
			res.Action = Renewed
		case reason == "":
			res.Action = Kept
			p.tighten(&res, f)
			p.results = append(p.results, res)
			return nil
		case !p.opts.Force:
			return fmt.Errorf("%s is stale (%s): %w", path, reason, ErrNeedsForce)
		default:
			res.Action, res.Reason = Reissued, reason
		}
	}
	if ca.key == nil {
		return fmt.Errorf("cannot issue %s: CA key %s is absent (externally managed CA)", path, ca.keyPath)
	}
	t := leafTemplate{CommonName: spec.User, Organizations: spec.Organizations, Usages: clientUsage()}
	cert, key, err := issue(ca.cert, ca.key, t, p.cfg.KeyAlgorithm, p.cfg.CertValidity, p.now)
	if err != nil {
		return err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return err
	}
	data, err := buildKubeconfig(p.cfg.ClusterName, server, spec.User, ca.trustPEM(), EncodeCert(cert), keyPEM)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	p.writes = append(p.writes, write{path, data, keyMode})
	p.results = append(p.results, res)
	return nil
}

func clientUsage() []x509.ExtKeyUsage { return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }

// buildKubeconfig is kubeadm's layout: one cluster, one user, one context
// named user@cluster, with everything embedded.
func buildKubeconfig(cluster, server, user string, caPEM, certPEM, keyPEM []byte) ([]byte, error) {
	ctx := user + "@" + cluster
	kc := clientcmdapi.NewConfig()
	kc.Clusters[cluster] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	kc.Contexts[ctx] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: user}
	kc.CurrentContext = ctx
	return clientcmd.Write(*kc)
}

// kubeconfigCredentials are the parts of a kubeconfig this package judges.
type kubeconfigCredentials struct {
	server string
	caPEM  []byte
	cert   []byte
	key    []byte
}

func credentials(kc *clientcmdapi.Config) (kubeconfigCredentials, string) {
	ctx := kc.Contexts[kc.CurrentContext]
	if ctx == nil {
		return kubeconfigCredentials{}, fmt.Sprintf("current context %q does not exist", kc.CurrentContext)
	}
	cl, ai := kc.Clusters[ctx.Cluster], kc.AuthInfos[ctx.AuthInfo]
	if cl == nil {
		return kubeconfigCredentials{}, fmt.Sprintf("cluster %q does not exist", ctx.Cluster)
	}
	if ai == nil {
		return kubeconfigCredentials{}, fmt.Sprintf("user %q does not exist", ctx.AuthInfo)
	}
	if len(ai.ClientCertificateData) == 0 || len(ai.ClientKeyData) == 0 {
		return kubeconfigCredentials{}, "no embedded client certificate and key"
	}
	return kubeconfigCredentials{cl.Server, cl.CertificateAuthorityData, ai.ClientCertificateData, ai.ClientKeyData}, ""
}

// staleKubeconfig says why kc is not what spec asks for, or "" when it is;
// foreign means it trusts or was issued by a different CA.
func staleKubeconfig(kc *clientcmdapi.Config, spec KubeconfigSpec, ca *authority, server string, now time.Time) (reason string, foreign bool) {
	cr, why := credentials(kc)
	if why != "" {
		return why, false
	}
	caCerts, err := ParseCerts(cr.caPEM)
	if err != nil {
		return "certificate-authority-data: " + err.Error(), false
	}
	if !ca.fresh && !caCerts[0].Equal(ca.cert) && ca.trusts(caCerts[0]) {
		return "it trusts the previous CA first (a CA rotation)", false
	}
	if ca.fresh || !caCerts[0].Equal(ca.cert) {
		return "it trusts a different CA than " + ca.certPath, true
	}
	certs, err := ParseCerts(cr.cert)
	if err != nil {
		return "client-certificate-data: " + err.Error(), false
	}
	cert := certs[0]
	if cert.CheckSignatureFrom(ca.cert) != nil {
		if !ca.fresh && ca.signedByPrevious(cert) {
			return "its client certificate is signed by the previous CA (a CA rotation)", false
		}
		return "its client certificate is not signed by " + ca.certPath, true
	}
	if cr.server != server {
		return fmt.Sprintf("server is %s, want %s", cr.server, server), false
	}
	key, err := ParseKey(cr.key)
	if err != nil {
		return "client-key-data: " + err.Error(), false
	}
	if !keyMatches(cert.PublicKey, key) {
		return "client key does not match the client certificate", false
	}
	if now.After(cert.NotAfter) {
		return "client certificate expired on " + cert.NotAfter.UTC().Format(time.RFC3339), false
	}
	if r := subjectDiff(cert, spec.User, spec.Organizations); r != "" {
		return "client certificate " + r, false
	}
	return "", false
}
