package master

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/node"
)

// TestBootstrapObjectsIdempotentAndSigned runs with the injected clock
// years behind and ahead of the machine's: every decision by time (the
// token's expiry, whether it still signs cluster-info) must follow the
// injected clock, never the wall clock beside it.
func TestBootstrapObjectsIdempotentAndSigned(t *testing.T) {
	for _, shift := range []struct {
		name          string
		years, months int
	}{{"today", 0, 0}, {"three years back", -3, 0}, {"four years ahead", 4, 0}, {"eleven months back", 0, -11}} {
		t.Run(shift.name, func(t *testing.T) {
			now := time.Now().UTC().Truncate(time.Second).AddDate(shift.years, shift.months, 0)
			testBootstrapObjects(t, now)
		})
	}
}

func testBootstrapObjects(t *testing.T, now time.Time) {
	ctx := context.Background()
	cs := fake.NewClientset()
	in := BootstrapInput{
		CACert:       []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
		APIServerURL: "https://10.0.0.10:6443",
		Token:        BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef", TTL: 24 * time.Hour},
		Cluster:      publishedTestCluster(),
		NodeConfig: &node.ClusterConfig{
			KubernetesVersion: images.DefaultVersion, ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
			PodCIDR: netip.MustParsePrefix("10.244.0.0/16"), ClusterDomain: "cluster.local", Network: v1alpha1.PodNetworkHostGW,
		},
		Now: func() time.Time { return now },
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
	if got, want := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]), now.Add(24*time.Hour).Format(time.RFC3339); got != want {
		t.Errorf("expiration %q, want %q", got, want)
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
	// Nodes read every Node for the pod network: the Node authorizer
	// lets a node read only its own.
	if b, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "anvil:podnet-node-reader", metav1.GetOptions{}); err != nil || len(b.Subjects) != 1 || b.Subjects[0].Name != "system:nodes" {
		t.Errorf("pod network binding: %+v, %v", b, err)
	}
	// Every bootstrap token may create CSRs, a token bound to a node too;
	// the controller-manager approves those of kubeadm's default group
	// alone, which a bound token is not in: anvil's approver decides them.
	for name, group := range map[string]string{
		ClusterAdminsGroup:                              ClusterAdminsGroup,
		"kubeadm:kubelet-bootstrap":                     "system:bootstrappers",
		"kubeadm:node-autoapprove-bootstrap":            NodeBootstrapGroup,
		"kubeadm:node-autoapprove-certificate-rotation": "system:nodes",
	} {
		b, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("binding %s: %v", name, err)
		} else if len(b.Subjects) != 1 || b.Subjects[0].Name != group {
			t.Errorf("binding %s is for %+v, want group %s", name, b.Subjects, group)
		}
	}
	for ns, names := range map[string][]string{
		"kube-public": {"kubeadm:bootstrap-signer-clusterinfo"},
		"kube-system": {"anvil:vip", "anvil:read-cluster-config", "anvil:node-config-reader"},
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
	if want, _ := PublishedClusterFile(in.Cluster); err != nil || cm.Data[ConfigMapKey] != string(want) {
		t.Errorf("anvil config map: %v %v", cm, err)
	}
	ncm, err := cs.CoreV1().ConfigMaps(node.ClusterConfigNamespace).Get(ctx, node.ClusterConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := node.ParseClusterConfigMap(ncm); err != nil || got != *in.NodeConfig {
		t.Errorf("node settings %+v (%v), want %+v", got, err, *in.NodeConfig)
	}
}

// TestAnvilConfigMapLeavesOutSSH plays any client that may read
// kube-system/anvil-config: the cluster file there must not tell it how
// the workstation logs in to the machines (users, key and known_hosts
// paths, the bastion), while joining masters still decode it.
func TestAnvilConfigMapLeavesOutSSH(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	yes := true
	c := publishedTestCluster()
	c.SSH = v1alpha1.SSH{User: "deploy", Port: 2222, IdentityFile: "/home/ops/.ssh/prod_ed25519", KnownHosts: "/home/ops/.ssh/prod_known_hosts",
		Bastion: &v1alpha1.Bastion{Address: "jump.example.com", User: "jumper", IdentityFile: "/home/ops/.ssh/jump_ed25519"}, Sudo: &yes}
	c.Hosts[0].SSH = v1alpha1.SSH{User: "m1admin", IdentityFile: "/home/ops/.ssh/m1_ed25519", KnownHosts: "/home/ops/.ssh/m1_known"}
	recipient := "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
	c.Backup.Recipients = []string{recipient}
	c.Default()
	signing := "ed25519:iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="
	if err := ensureAnvilConfigMap(ctx, cs, c, signing); err != nil {
		t.Fatal(err)
	}
	cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := cm.Data[ConfigMapKey]
	for _, secret := range []string{"ssh:", "identityFile", "knownHosts", "bastion", "sudo", "/home/ops", "deploy", "jumper", "m1admin", "jump.example.com", "2222"} {
		if strings.Contains(got, secret) {
			t.Errorf("the published cluster file holds %q:\n%s", secret, got)
		}
	}
	if !strings.Contains(got, recipient) {
		t.Errorf("the published cluster file lost the backup recipient:\n%s", got)
	}
	if cm.Data[ConfigMapSigningKey] != signing {
		t.Errorf("the backup signing key is not published: %v", cm.Data)
	}
	back, err := v1alpha1.Decode(ConfigMapName, []byte(got))
	if err != nil {
		t.Fatalf("a joining master cannot decode it: %v", err)
	}
	if len(back.Hosts) != len(c.Hosts) || back.Name != c.Name {
		t.Errorf("decoded %+v", back)
	}
	if c.SSH.User != "deploy" || c.Hosts[0].SSH.User != "m1admin" {
		t.Error("publishing changed the cluster it published")
	}
}

// publishedTestCluster is a defaulted cluster of two masters and a worker.
func publishedTestCluster() *v1alpha1.Cluster {
	c := &v1alpha1.Cluster{
		APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.KindCluster, Name: "lab",
		Hosts: []v1alpha1.Host{
			{Name: "lab-m1", Address: netip.MustParseAddr("10.0.0.11"), Role: v1alpha1.RoleMaster},
			{Name: "lab-m2", Address: netip.MustParseAddr("10.0.0.12"), Role: v1alpha1.RoleMaster},
			{Name: "lab-w1", Address: netip.MustParseAddr("10.0.0.21"), Role: v1alpha1.RoleWorker},
		},
	}
	c.Default()
	return c
}
