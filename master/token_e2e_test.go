package master_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"anvil.dev/anvil/approver"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// TestBootstrapTokenBoundToOneNodeE2E plays the holder of a join token
// (anyone who saw it on its way to the machine it was for) against a real
// control plane as anvil init makes it — its RBAC, the controller-manager's
// csrapproving controller and anvil's approver running: a token made with
// `anvil token create --node node-a` obtains node-a's client certificate,
// approved by anvil's approver, once, while no Node node-a exists; never
// another node's, nor an existing Node's. And a token that never expires,
// or outlives the cap, is not made.
func TestBootstrapTokenBoundToOneNodeE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cp := mastertest.Start(t, mastertest.Options{})
	admin := cp.Client(t)
	ctx := context.Background()
	// The master's own Node: the agent registers it (runtime none), and
	// init waited for it.
	if _, err := admin.CoreV1().Nodes().Get(ctx, "m1", metav1.GetOptions{}); err != nil {
		t.Fatalf("Node m1: %v", err)
	}

	t.Run("anvil token create refuses a token that never expires, one that outlives the cap, and a bad node name", func(t *testing.T) {
		for _, tc := range []struct {
			flags []string
			want  string
		}{
			{[]string{"--ttl", "0", "--node", "node-a"}, "--ttl 0s: a bootstrap token must expire"},
			{[]string{"--ttl", "25h", "--node", "node-a"}, "--ttl 25h0m0s: a bootstrap token lives at most 24h0m0s"},
			{[]string{"--ttl", "1h", "--node", "Node_A"}, `--node: node name "Node_A"`},
		} {
			out, err := cp.Run(ctx, append([]string{"token", "create", "--root", string(cp.Root)}, tc.flags...)...)
			var ee *exec.ExitError
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("token create %s: %v\n%s\nwant it to say %q", strings.Join(tc.flags, " "), err, out, tc.want)
			} else if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Errorf("token create %s: %v, want exit code 2 (a command line that cannot work)", strings.Join(tc.flags, " "), err)
			}
		}
		list, err := admin.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(bootstrapapi.SecretTypeBootstrapToken)})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			if strings.Contains(string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]), "node-a") {
				t.Errorf("a refused token was made: %s", s.Name)
			}
		}
	})

	tokA := cp.NodeToken(t, "node-a", 10*time.Minute)
	t.Run("the token is in node-a's group alone", func(t *testing.T) {
		s, err := admin.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, bootstrapapi.BootstrapTokenSecretPrefix+tokA.ID(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]), approver.NodeBootstrapGroupPrefix+"node-a"; got != want {
			t.Errorf("groups %q, want %q alone (never %s, whose CSRs the controller-manager approves)", got, want, master.NodeBootstrapGroup)
		}
	})
	a := bootstrapClient(t, cp, tokA)

	t.Run("it reads what a join reads", func(t *testing.T) {
		if _, err := a.CoreV1().ConfigMaps(node.ClusterConfigNamespace).Get(ctx, node.ClusterConfigMap, metav1.GetOptions{}); err != nil {
			t.Errorf("node settings: %v", err)
		}
		if _, err := a.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, master.ConfigMapName, metav1.GetOptions{}); err != nil {
			t.Errorf("cluster file: %v", err)
		}
		// A master's join reads the sealed certificates with its token.
		if out, err := cp.Run(ctx, "init", "phase", "upload-certs", "--root", string(cp.Root)); err != nil {
			t.Fatalf("anvil init phase upload-certs: %v\n%s", err, out)
		}
		if _, err := a.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, master.CertsSecretName, metav1.GetOptions{}); err != nil {
			t.Errorf("sealed certificates: %v", err)
		}
		if _, err := a.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list secrets: %v, want forbidden", err)
		}
	})

	t.Run("it cannot obtain another node's client certificate", func(t *testing.T) {
		csr := createNodeCSR(t, a, "a-as-b", "node-b")
		deniedByAnvil(t, admin, csr, `not "system:node:node-a"`)
	})
	t.Run("nor an existing Node's", func(t *testing.T) {
		csr := createNodeCSR(t, a, "a-as-m1", "m1")
		deniedByAnvil(t, admin, csr, `not "system:node:node-a"`)
		m1 := bootstrapClient(t, cp, cp.NodeToken(t, "m1", 10*time.Minute))
		csr = createNodeCSR(t, m1, "m1-token-as-m1", "m1")
		deniedByAnvil(t, admin, csr, "Node m1 already exists")
	})
	t.Run("it obtains node-a's, approved by anvil's approver", func(t *testing.T) {
		csr := createNodeCSR(t, a, "a-as-a", "node-a")
		got := waitDecided(t, admin, csr)
		c := condition(got, certificatesv1.CertificateApproved)
		if c.Reason != approver.ApprovedReason {
			t.Fatalf("approved %+v, want by %s", got.Status.Conditions, approver.ApprovedReason)
		}
		got = waitIssued(t, admin, csr)
		certs, err := pki.ParseCerts(got.Status.Certificate)
		if err != nil || certs[0].Subject.CommonName != "system:node:node-a" || !slices.Equal(certs[0].Subject.Organization, []string{"system:nodes"}) {
			t.Errorf("issued %v (%v)", certs, err)
		}
	})
	t.Run("anvil join with a token bound to another node is denied; with its own node's, it joins", func(t *testing.T) {
		tok := cp.NodeToken(t, "node-c", 10*time.Minute)
		ns := cp.Network.Add(t)
		join := func(name string) (string, error) {
			// Short: the supervisor's socket is under it (at most 108
			// bytes), and t.TempDir is named after this long subtest.
			dir, err := os.MkdirTemp("", "join-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			root := hostfs.Root(dir)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := supervise.Stop(ctx, root, 30*time.Second); err != nil {
					t.Logf("stop the supervisor of %s: %v", name, err)
				}
			})
			cmd := ns.Command(ctx, cp.Anvil, "join", cp.URL, "--token-file", "-", "--ca-cert-hash", cp.CAHash.String(), "--node-name", name,
				"--runtime", "none", "--layout", "process", "--root", string(root), "--timeout", "90s", "--csr-timeout", "30s")
			cmd.Stdin = strings.NewReader(tok.Reveal() + "\n")
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := join("node-d")
		if err == nil || !strings.Contains(out, "denied") || !strings.Contains(out, "bound to node node-c") {
			t.Errorf("join as node-d with node-c's token: %v\n%s", err, out)
		}
		if out, err := join("node-c"); err != nil {
			t.Fatalf("join as node-c with its token: %v\n%s", err, out)
		}
		if _, err := admin.CoreV1().Nodes().Get(ctx, "node-c", metav1.GetOptions{}); err != nil {
			t.Errorf("Node node-c after its join: %v", err)
		}
		if _, err := admin.CoreV1().Nodes().Get(ctx, "node-d", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Node node-d after its denied join: %v", err)
		}
	})
	t.Run("once Node node-a exists, the token obtains its identity no more", func(t *testing.T) {
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		csr := createNodeCSR(t, a, "a-as-a-again", "node-a")
		deniedByAnvil(t, admin, csr, "Node node-a already exists")
	})
}

// bootstrapClient authenticates with tok, as a joining node does, once the
// apiserver knows the token (it reads token Secrets through an informer).
func bootstrapClient(t *testing.T, cp *mastertest.ControlPlane, tok pki.Token) kubernetes.Interface {
	t.Helper()
	cfg := rest.AnonymousClientConfig(cp.RESTConfig(t))
	cfg.BearerToken = tok.Reveal()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err == nil || !apierrors.IsUnauthorized(err) {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("bootstrap token %s still unknown to the apiserver after 15s: %v", tok.ID(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createNodeCSR asks, as cs, for a node client certificate for node name,
// as a joining node's TLS bootstrap does.
func createNodeCSR(t *testing.T, cs kubernetes.Interface, csrName, name string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CertificatesV1().CertificateSigningRequests().Create(context.Background(), &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: csrName},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create CSR %s for system:node:%s: %v", csrName, name, err)
	}
	return csrName
}

// waitCSR polls CSR name until done holds, for up to a minute (anvil's
// approver takes its Lease a few seconds after init).
func waitCSR(t *testing.T, cs kubernetes.Interface, name string, done func(*certificatesv1.CertificateSigningRequest) bool) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		csr, err := cs.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if done(csr) {
			return csr
		}
		if time.Now().After(deadline) {
			t.Fatalf("CSR %s: not done after a minute: %+v", name, csr.Status.Conditions)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitDecided(t *testing.T, cs kubernetes.Interface, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	return waitCSR(t, cs, name, func(csr *certificatesv1.CertificateSigningRequest) bool {
		return condition(csr, certificatesv1.CertificateApproved).Type != "" || condition(csr, certificatesv1.CertificateDenied).Type != ""
	})
}

func waitIssued(t *testing.T, cs kubernetes.Interface, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	return waitCSR(t, cs, name, func(csr *certificatesv1.CertificateSigningRequest) bool { return len(csr.Status.Certificate) > 0 })
}

// deniedByAnvil wants CSR name denied by anvil's approver, saying why,
// and never approved (by the controller-manager or anyone) nor issued.
func deniedByAnvil(t *testing.T, cs kubernetes.Interface, name, why string) {
	t.Helper()
	csr := waitDecided(t, cs, name)
	if c := condition(csr, certificatesv1.CertificateApproved); c.Type != "" {
		t.Fatalf("CSR %s approved by %s (%s): the token obtained an identity it was not made for", name, c.Reason, c.Message)
	}
	c := condition(csr, certificatesv1.CertificateDenied)
	if c.Reason != approver.DeniedReason || !strings.Contains(c.Message, why) {
		t.Errorf("CSR %s denied by %s: %q, want by %s saying %q", name, c.Reason, c.Message, approver.DeniedReason, why)
	}
	// A denied CSR is never signed; give the signer a moment to prove it.
	time.Sleep(time.Second)
	if csr, err := cs.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{}); err != nil || len(csr.Status.Certificate) > 0 {
		t.Errorf("CSR %s: issued after its denial (%v)", name, err)
	}
}

func condition(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType) certificatesv1.CertificateSigningRequestCondition {
	for _, c := range csr.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return certificatesv1.CertificateSigningRequestCondition{}
}
