package agent_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/node"
)

// TestNodeConfigE2E joins with runtime containerd against a real
// apiserver: without the node settings the join says why and writes
// nothing; once they are published (with the RBAC init makes), a
// bootstrap token reads them, and a dry run plans the node phase.
func TestNodeConfigE2E(t *testing.T) {
	requireE2E(t)
	cp := mastertest.Start(t, mastertest.Options{})
	cs := cp.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tok := cp.Token(t, time.Hour)
	w := newWorker(t, cp, "w1")
	bin := w.Root.Bin(images.DefaultVersion)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{images.Containerd, images.Kubelet, images.Ctr} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	list := func() []string {
		var out []string
		filepath.Walk(string(w.Root), func(p string, _ os.FileInfo, err error) error { out = append(out, p); return err })
		return out
	}
	cms := cs.CoreV1().ConfigMaps(node.ClusterConfigNamespace)
	// Masters that predate the node settings (or a test harness that does
	// not publish them yet).
	if err := cms.Delete(ctx, node.ClusterConfigMap, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}

	t.Run("masters without the node settings", func(t *testing.T) {
		before := list()
		out, err := w.joinArgs(ctx, cp, tok, cp.CAHash.String(), "--runtime", "containerd")
		if err == nil {
			t.Fatalf("join succeeded without the node settings:\n%s", out)
		}
		for _, want := range []string{"anvil-node-config", "predates", "--runtime none"} {
			if !strings.Contains(out, want) {
				t.Errorf("error lacks %q:\n%s", want, out)
			}
		}
		if after := list(); !slices.Equal(before, after) {
			t.Errorf("the failed join wrote %v", after)
		}
		csrs, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(csrs.Items) > 0 {
			t.Errorf("%d CSRs were sent before the node settings were read", len(csrs.Items))
		}
	})

	cc := node.ClusterConfig{KubernetesVersion: images.DefaultVersion, ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
		PodCIDR: netip.MustParsePrefix("10.244.0.0/16"), ClusterDomain: "cluster.local", Network: v1alpha1.PodNetworkHostGW}
	cm, err := cc.ConfigMap()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role, binding := node.ClusterConfigRBAC()
	if _, err := cs.RbacV1().Roles(role.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(binding.Namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	t.Run("a bootstrap token reads them", func(t *testing.T) {
		before := list()
		out, err := w.joinArgs(ctx, cp, tok, cp.CAHash.String(), "--runtime", "containerd", "--dry-run")
		if err != nil {
			t.Fatalf("dry run: %v\n%s", err, out)
		}
		for _, want := range []string{"node: ", "pod CIDR 10.244.0.0/16", "nothing was changed"} {
			if !strings.Contains(out, want) {
				t.Errorf("dry run output lacks %q:\n%s", want, out)
			}
		}
		if after := list(); !slices.Equal(before, after) {
			t.Errorf("the dry run wrote %v", after)
		}
	})
}
