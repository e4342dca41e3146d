package approver_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/client-go/util/retry"

	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
)

// cluster is a real control plane (mastertest: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler in a namespace of the test's),
// with the cluster CA at hand to mint the identities a test acts as.
type cluster struct {
	cp     *mastertest.ControlPlane
	admin  kubernetes.Interface
	caPEM  []byte
	caCert *x509.Certificate
	caKey  crypto.Signer
}

func startCluster(t testing.TB) *cluster {
	t.Helper()
	cp := mastertest.Start(t, mastertest.Options{})
	c := &cluster{cp: cp, admin: cp.Client(t)}
	caFile := filepath.Join(cp.Root.PKI(), pki.CertFile(pki.CACertAndKeyBaseName))
	var err error
	if c.caPEM, err = os.ReadFile(caFile); err != nil {
		t.Fatal(err)
	}
	if c.caCert, err = pki.ReadCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	if c.caKey, err = pki.ReadKeyFile(filepath.Join(cp.Root.PKI(), pki.KeyFile(pki.CACertAndKeyBaseName))); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The tests run their own approvers, under identities they choose.
	cp.StopComponent(t, master.Approver)
	// What anvil's bootstrap objects grant (init made them already; the
	// test does not depend on it): the approver's own RBAC, and CSR
	// creation for every bootstrap token, including the node-bound ones
	// that are not in the default group.
	o := approver.RBAC()
	rbac := c.admin.RbacV1()
	must(t, create(rbac.ClusterRoles().Create(ctx, o.ClusterRole, metav1.CreateOptions{})))
	must(t, create(rbac.ClusterRoleBindings().Create(ctx, o.ClusterRoleBinding, metav1.CreateOptions{})))
	must(t, create(rbac.Roles(o.Role.Namespace).Create(ctx, o.Role, metav1.CreateOptions{})))
	must(t, create(rbac.RoleBindings(o.RoleBinding.Namespace).Create(ctx, o.RoleBinding, metav1.CreateOptions{})))
	must(t, create(rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e:bootstrappers-create-csr"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-bootstrapper"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:bootstrappers"}},
	}, metav1.CreateOptions{})))
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// create is a Create's error, but for AlreadyExists.
func create[T any](_ T, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func (c *cluster) restConfig() *rest.Config {
	return &rest.Config{Host: c.cp.URL, TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM}, QPS: 100, Burst: 200}
}

// userClient authenticates with a client certificate the cluster CA signs
// for cn in orgs, as a kubelet's or the approver's kubeconfig would.
func (c *cluster) userClient(t testing.TB, cn string, orgs ...string) kubernetes.Interface {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	must(t, err)
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, c.caCert, key.Public(), c.caKey)
	must(t, err)
	keyPEM, err := pki.EncodeKey(key)
	must(t, err)
	cfg := c.restConfig()
	cfg.CertData = pki.EncodeCert(&x509.Certificate{Raw: der})
	cfg.KeyData = keyPEM
	cs, err := kubernetes.NewForConfig(cfg)
	must(t, err)
	return cs
}

// nodeClient acts as the kubelet of node name.
func (c *cluster) nodeClient(t testing.TB, name string) kubernetes.Interface {
	return c.userClient(t, approver.NodeUserPrefix+name, approver.NodesGroup)
}

// tokenClient authenticates with a bootstrap token, as a joining node does.
func (c *cluster) tokenClient(t testing.TB, tok pki.Token) kubernetes.Interface {
	t.Helper()
	cfg := c.restConfig()
	cfg.BearerToken = tok.Reveal()
	cs, err := kubernetes.NewForConfig(cfg)
	must(t, err)
	// The apiserver reads bootstrap tokens' Secrets through an informer: a
	// token just made is Unauthorized until it has seen the Secret.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err == nil || !apierrors.IsUnauthorized(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bootstrap token %s still unknown to the apiserver after 15s: %v", tok.ID(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cs
}

// boundToken makes a real bootstrap token (its Secret in kube-system, as
// `anvil token create` stores them) bound to node name only.
func (c *cluster) boundToken(t testing.TB, name string) pki.Token {
	t.Helper()
	tok, err := pki.GenerateToken()
	must(t, err)
	group, err := approver.NodeBootstrapGroup(name)
	must(t, err)
	must(t, master.EnsureBootstrapToken(context.Background(), c.admin, master.BootstrapToken{
		ID: tok.ID(), Secret: tok.Secret(), TTL: time.Hour, Description: "e2e: join of " + name, Groups: []string{group},
	}, time.Now()))
	return tok
}

// createNode registers a Node with addresses, as a kubelet does.
func (c *cluster) createNode(t testing.TB, name string, addrs ...string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	ctx := context.Background()
	got, err := c.admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	must(t, err)
	if len(got.Status.Addresses) == 0 {
		got.Status.Addresses = n.Status.Addresses
		_, err = c.admin.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{})
		must(t, err)
	}
}

// startApprover runs approver.Run as system:anvil-approver until the
// returned stop is called (or the test ends); stop fails the test if Run
// returned an error.
func (c *cluster) startApprover(t testing.TB, o approver.Options) (stop func()) {
	t.Helper()
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cs := c.userClient(t, approver.User)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- approver.Run(ctx, cs, o) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("approver.Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("approver.Run did not return 30 s after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitLeader waits until identity holds the approver's Lease.
func (c *cluster) waitLeader(t testing.TB, identity string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l, err := c.admin.CoordinationV1().Leases(approver.LeaseNamespace).Get(context.Background(), approver.LeaseName, metav1.GetOptions{})
		if err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == identity {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not hold lease %s/%s after %s (lease %v, %v)", identity, approver.LeaseNamespace, approver.LeaseName, within, l, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stealLease makes holder the holder of the approver's Lease for d, as
// another instance that won it would.
func (c *cluster) stealLease(t testing.TB, holder string, d time.Duration) {
	t.Helper()
	leases := c.admin.CoordinationV1().Leases(approver.LeaseNamespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(context.Background(), approver.LeaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewMicroTime(time.Now())
		secs := int32(d / time.Second)
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds = &holder, &secs
		l.Spec.AcquireTime, l.Spec.RenewTime = &now, &now
		_, err = leases.Update(context.Background(), l, metav1.UpdateOptions{})
		return err
	})
	must(t, err)
}

// createCSR creates a CSR as cs and returns when it did.
func createCSR(t testing.TB, cs kubernetes.Interface, name, signer string, usages []certificatesv1.KeyUsage, r request) time.Time {
	t.Helper()
	start := time.Now()
	if err := tryCreateCSR(t, cs, name, signer, usages, r); err != nil {
		t.Fatalf("create CSR %s: %v", name, err)
	}
	return start
}

func tryCreateCSR(t testing.TB, cs kubernetes.Interface, name, signer string, usages []certificatesv1.KeyUsage, r request) error {
	t.Helper()
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       certificatesv1.CertificateSigningRequestSpec{Request: r.pem(t), SignerName: signer, Usages: usages},
	}
	_, err := cs.CertificatesV1().CertificateSigningRequests().Create(context.Background(), csr, metav1.CreateOptions{})
	return err
}

// errNotYet keeps a wait going.
var errNotYet = errors.New("not yet")

// waitCSR watches CSR name until done says it is finished (nil) or failed
// (another error), and returns it with the time it was seen so.
func (c *cluster) waitCSR(t testing.TB, name string, within time.Duration, done func(*certificatesv1.CertificateSigningRequest) error) (*certificatesv1.CertificateSigningRequest, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	csrs := c.admin.CertificatesV1().CertificateSigningRequests()
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return csrs.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return csrs.Watch(ctx, o)
		},
	}
	var last *certificatesv1.CertificateSigningRequest
	var seen time.Time
	var failed error
	_, err := watchtools.UntilWithSync(ctx, lw, &certificatesv1.CertificateSigningRequest{}, nil, func(e watch.Event) (bool, error) {
		csr, ok := e.Object.(*certificatesv1.CertificateSigningRequest)
		if !ok {
			return false, nil
		}
		last, seen = csr, time.Now()
		switch err := done(csr); {
		case err == nil:
			return true, nil
		case errors.Is(err, errNotYet):
			return false, nil
		default:
			failed = err
			return true, nil
		}
	})
	if failed != nil {
		t.Fatalf("CSR %s: %v\nconditions: %+v", name, failed, conditions(last))
	}
	if err != nil {
		t.Fatalf("CSR %s not done after %s: %v\nconditions: %+v", name, within, err, conditions(last))
	}
	return last, seen
}

func conditions(csr *certificatesv1.CertificateSigningRequest) []certificatesv1.CertificateSigningRequestCondition {
	if csr == nil {
		return nil
	}
	return csr.Status.Conditions
}

// decidedBy waits for a condition of type typ; with reason set, it must
// be that reason's. Every other decision fails it, and so does a CSR
// decided more than once.
func decidedBy(typ certificatesv1.RequestConditionType, reason string) func(*certificatesv1.CertificateSigningRequest) error {
	return func(csr *certificatesv1.CertificateSigningRequest) error {
		var found []certificatesv1.CertificateSigningRequestCondition
		for _, c := range csr.Status.Conditions {
			if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied {
				found = append(found, c)
			}
		}
		switch {
		case len(found) == 0:
			return errNotYet
		case len(found) > 1:
			return fmt.Errorf("decided %d times", len(found))
		case found[0].Type != typ:
			return fmt.Errorf("%s (%s: %s), want %s", found[0].Type, found[0].Reason, found[0].Message, typ)
		case reason != "" && found[0].Reason != reason:
			return fmt.Errorf("%s by %s (%s), want by %s", typ, found[0].Reason, found[0].Message, reason)
		}
		return nil
	}
}

// issued waits for the signed certificate.
func issued(csr *certificatesv1.CertificateSigningRequest) error {
	if err := decidedBy(certificatesv1.CertificateApproved, "")(csr); err != nil {
		return err
	}
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateFailed {
			return fmt.Errorf("signing failed: %s: %s", c.Reason, c.Message)
		}
	}
	if len(csr.Status.Certificate) == 0 {
		return errNotYet
	}
	return nil
}

// condition returns csr's condition of type typ.
func condition(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType) certificatesv1.CertificateSigningRequestCondition {
	for _, c := range csr.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return certificatesv1.CertificateSigningRequestCondition{}
}

// checkCert checks the issued certificate: signed by the cluster CA, for
// key, with the subject and SANs asked for and the one extended usage.
func (c *cluster) checkCert(t testing.TB, csr *certificatesv1.CertificateSigningRequest, r request, ext x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	certs, err := pki.ParseCerts(csr.Status.Certificate)
	if err != nil {
		t.Fatalf("CSR %s: %v", csr.Name, err)
	}
	cert := certs[0]
	if err := cert.CheckSignatureFrom(c.caCert); err != nil {
		t.Errorf("CSR %s: certificate not signed by the cluster CA: %v", csr.Name, err)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(r.key.Public()) {
		t.Errorf("CSR %s: certificate for another key", csr.Name)
	}
	if cert.Subject.CommonName != r.cn || !slices.Equal(cert.Subject.Organization, []string{approver.NodesGroup}) {
		t.Errorf("CSR %s: certificate for %s", csr.Name, cert.Subject)
	}
	if !slices.Equal(cert.DNSNames, r.dns) || len(cert.IPAddresses) != len(r.ips) {
		t.Errorf("CSR %s: certificate SANs %v %v, asked %v %v", csr.Name, cert.DNSNames, cert.IPAddresses, r.dns, r.ips)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{ext}) {
		t.Errorf("CSR %s: extended usages %v, want [%v]", csr.Name, cert.ExtKeyUsage, ext)
	}
	return cert
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	return k
}

// deleteBinding removes a ClusterRoleBinding if it exists.
func (c *cluster) deleteBinding(t testing.TB, name string) {
	t.Helper()
	err := c.admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

var (
	servingUsages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	clientUsages  = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
)

const (
	servingSigner = certificatesv1.KubeletServingSignerName
	clientSigner  = certificatesv1.KubeAPIServerClientKubeletSignerName
)
