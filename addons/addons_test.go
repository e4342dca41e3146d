package addons

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"anvil.dev/anvil/api/v1alpha1"
)

func cluster(hosts ...v1alpha1.Host) *v1alpha1.Cluster {
	c := &v1alpha1.Cluster{Hosts: hosts}
	c.Default()
	return c
}

func host(name string, role v1alpha1.Role, rt v1alpha1.Runtime) v1alpha1.Host {
	return v1alpha1.Host{Name: name, Role: role, Runtime: rt, Address: netip.MustParseAddr("10.0.0.1")}
}

func TestDNSObjects(t *testing.T) {
	tests := []struct {
		name       string
		hosts      []v1alpha1.Host
		none       bool
		toleration bool
	}{
		{"workers run it; masters keep their taint", []v1alpha1.Host{host("m1", v1alpha1.RoleMaster, v1alpha1.RuntimeContainerd), host("w1", v1alpha1.RoleWorker, v1alpha1.RuntimeContainerd)}, false, false},
		{"only masters run pods: it tolerates their taint", []v1alpha1.Host{host("m1", v1alpha1.RoleMaster, v1alpha1.RuntimeContainerd)}, false, true},
		{"no host runs pods: nothing to deploy", []v1alpha1.Host{host("m1", v1alpha1.RoleMaster, v1alpha1.RuntimeNone)}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := DNSObjects(cluster(tt.hosts...), DNSOptions{Forward: true})
			if err != nil {
				t.Fatal(err)
			}
			if WantsDNS(cluster(tt.hosts...)) == tt.none {
				t.Errorf("WantsDNS = %v for a cluster that runs pods: %v", tt.none, !tt.none)
			}
			if tt.none {
				if len(objs) != 0 {
					t.Fatalf("%d objects for a cluster that runs no pods", len(objs))
				}
				return
			}
			var d *appsv1.Deployment
			var svc *corev1.Service
			var cm *corev1.ConfigMap
			for _, o := range objs {
				switch o := o.(type) {
				case *appsv1.Deployment:
					d = o
				case *corev1.Service:
					svc = o
				case *corev1.ConfigMap:
					cm = o
				}
			}
			if d == nil || svc == nil || cm == nil {
				t.Fatalf("objects: %v", objs)
			}
			if svc.Spec.ClusterIP != "10.96.0.10" {
				t.Errorf("kube-dns at %s, want the service CIDR's tenth address 10.96.0.10", svc.Spec.ClusterIP)
			}
			if td := svc.Spec.TrafficDistribution; td == nil || *td != corev1.ServiceTrafficDistributionPreferSameNode {
				t.Errorf("kube-dns trafficDistribution %v, want %s: a stopped node's replica must not take the queries of a node that has its own", td, corev1.ServiceTrafficDistributionPreferSameNode)
			}
			if *d.Spec.Replicas != 2 {
				t.Errorf("%d replicas", *d.Spec.Replicas)
			}
			spread := d.Spec.Template.Spec.TopologySpreadConstraints
			if len(spread) != 1 || spread[0].MaxSkew != 1 || spread[0].TopologyKey != corev1.LabelHostname || spread[0].WhenUnsatisfiable != corev1.DoNotSchedule ||
				spread[0].NodeTaintsPolicy == nil || *spread[0].NodeTaintsPolicy != corev1.NodeInclusionPolicyHonor || !slices.Equal(spread[0].MatchLabelKeys, []string{appsv1.DefaultDeploymentUniqueLabelKey}) {
				t.Errorf("topology spread %+v, want at most one replica more on a node than on another that can run one, counted per ReplicaSet", spread)
			}
			tolerates := len(d.Spec.Template.Spec.Tolerations) > 0
			if tolerates != tt.toleration {
				t.Errorf("tolerations %v, want the control-plane one: %v", d.Spec.Template.Spec.Tolerations, tt.toleration)
			}
			if d.Spec.Template.Spec.DNSPolicy != corev1.DNSDefault {
				t.Errorf("dnsPolicy %s: CoreDNS must forward to the node's resolvers, not to itself", d.Spec.Template.Spec.DNSPolicy)
			}
			if c := cm.Data["Corefile"]; !strings.Contains(c, "kubernetes cluster.local in-addr.arpa") || !strings.Contains(c, "loop") {
				t.Errorf("Corefile:\n%s", c)
			}
		})
	}
}

func TestDNSObjectsServiceCIDRTooSmall(t *testing.T) {
	c := cluster(host("m1", v1alpha1.RoleMaster, v1alpha1.RuntimeContainerd))
	c.Networking.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/29")
	if _, err := DNSObjects(c, DNSOptions{}); err == nil || !strings.Contains(err.Error(), "networking.serviceCIDR") {
		t.Errorf("got %v, want an error naming networking.serviceCIDR", err)
	}
}

// TestApplyKeepsUsersFields applies twice and checks that a field a user
// set and anvil does not own survives, and that one anvil owns is put back.
func TestApplyKeepsUsersFields(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	objs, err := DNSObjects(cluster(host("m1", v1alpha1.RoleMaster, v1alpha1.RuntimeContainerd), host("w1", v1alpha1.RoleWorker, v1alpha1.RuntimeContainerd)), DNSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := Apply(ctx, cs, objs, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != len(objs) {
		t.Errorf("the first apply changed %v, want all %d objects", changed, len(objs))
	}
	deploys := cs.AppsV1().Deployments(metav1.NamespaceSystem)
	d, err := deploys.Get(ctx, CoreDNSName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Annotations = map[string]string{"example.com/owner": "team-a"}
	three := int32(3)
	d.Spec.Replicas = &three
	if _, err := deploys.Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(ctx, cs, objs, false); err != nil {
		t.Fatal(err)
	}
	d, err = deploys.Get(ctx, CoreDNSName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Annotations["example.com/owner"] != "team-a" {
		t.Errorf("the user's annotation is gone: %v", d.Annotations)
	}
	if *d.Spec.Replicas != CoreDNSReplicas {
		t.Errorf("replicas %d: anvil owns the field and applies %d", *d.Spec.Replicas, CoreDNSReplicas)
	}
}

// TestCorefileWithoutUpstreams: CoreDNS refuses to start with a forward
// block and no resolver, so an offline site gets none.
func TestCorefileWithoutUpstreams(t *testing.T) {
	if c := Corefile("cluster.local", false); strings.Contains(c, "forward") {
		t.Errorf("forwards with no upstream:\n%s", c)
	}
	if c := Corefile("cluster.local", true); !strings.Contains(c, "forward . /etc/resolv.conf") {
		t.Errorf("does not forward:\n%s", c)
	}
}

// dryRunDeployments answers a Patch the way the API server answers a dry
// run: the object as it would be, under the resourceVersion it has now.
type dryRunDeployments struct {
	cur, out *appsv1.Deployment
}

func (d dryRunDeployments) Get(context.Context, string, metav1.GetOptions) (*appsv1.Deployment, error) {
	return d.cur.DeepCopy(), nil
}

func (d dryRunDeployments) Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*appsv1.Deployment, error) {
	return d.out.DeepCopy(), nil
}

// TestDryRunTellsAnEditFromNoise: a dry run bumps no resourceVersion, so
// drift is told by the object itself; a moved status, generation or
// managedFields entry is not drift, an edited field anvil owns is.
func TestDryRunTellsAnEditFromNoise(t *testing.T) {
	two, one := int32(2), int32(1)
	cur := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: CoreDNSName, Namespace: metav1.NamespaceSystem, ResourceVersion: "7", Generation: 3},
		Spec:       appsv1.DeploymentSpec{Replicas: &one},
		Status:     appsv1.DeploymentStatus{ReadyReplicas: 1},
	}
	noise := cur.DeepCopy()
	noise.Generation = 4
	noise.Status.ReadyReplicas = 2
	noise.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldManager, Operation: metav1.ManagedFieldsOperationApply}}
	edited := noise.DeepCopy()
	edited.Spec.Replicas = &two
	for _, tc := range []struct {
		name string
		out  *appsv1.Deployment
		want bool
	}{
		{"nothing but noise", noise, false},
		{"replicas put back", edited, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyOne(context.Background(), dryRunDeployments{cur: cur, out: tc.out}, CoreDNSName, []byte("{}"), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("changed = %v, want %v", got, tc.want)
			}
		})
	}
}
