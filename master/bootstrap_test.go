package master

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"
)

func TestBootstrapObjectsIdempotentAndSigned(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	in := BootstrapInput{
		CACert:       []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
		APIServerURL: "https://10.0.0.10:6443",
		Token:        BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef", TTL: 24 * time.Hour},
		ClusterFile:  []byte("name: test\n"),
		Now:          func() time.Time { return now },
	}
	for i := 0; i < 2; i++ {
		if err := EnsureBootstrapObjects(ctx, cs, in); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	s, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-abcdef", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]); got != "2026-11-24T12:00:00Z" {
		t.Errorf("expiration %q", got)
	}
	if string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]) != NodeBootstrapGroup {
		t.Errorf("groups %q", s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey])
	}
	ci, err := cs.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	content := ci.Data[bootstrapapi.KubeConfigKey]
	sig := ci.Data[bootstrapapi.JWSSignatureKeyPrefix+"abcdef"]
	if !jws.DetachedTokenIsValid(sig, content, "abcdef", "0123456789abcdef") {
		t.Error("cluster-info is not signed for the token")
	}
	if jws.DetachedTokenIsValid(sig, content, "abcdef", "ffffffffffffffff") {
		t.Error("cluster-info signature accepts another secret")
	}
	for _, name := range []string{ClusterAdminsGroup, "kubeadm:kubelet-bootstrap", "kubeadm:node-autoapprove-bootstrap", "kubeadm:node-autoapprove-certificate-rotation"} {
		if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("binding %s: %v", name, err)
		}
	}
	for ns, names := range map[string][]string{
		"kube-public": {"kubeadm:bootstrap-signer-clusterinfo"},
		"kube-system": {"anvil:vip", "anvil:read-cluster-config"},
	} {
		for _, name := range names {
			if _, err := cs.RbacV1().Roles(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
				t.Errorf("role %s/%s: %v", ns, name, err)
			}
			if _, err := cs.RbacV1().RoleBindings(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
				t.Errorf("binding %s/%s: %v", ns, name, err)
			}
		}
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "kubeadm:apiserver-kubelet-client", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, ConfigMapName, metav1.GetOptions{})
	if err != nil || cm.Data[ConfigMapKey] != "name: test\n" {
		t.Errorf("anvil config map: %v %v", cm, err)
	}
}
