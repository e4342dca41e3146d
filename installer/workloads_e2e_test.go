package installer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/addons"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/master"
)

// workloadsE2E checks, on the lab's applied cluster, that its nodes are
// real nodes (issue 14): every Node runs containerd and the kubelet of the
// release, masters keep their taint, a Deployment of the repo's test image
// runs one pod on each worker, pods reach each other across workers, and
// kubectl logs, exec and port-forward work through kubelets whose serving
// certificates the apiserver checks; a stopped worker's pods come back, and
// a deleted Node's routes go.
func workloadsE2E(t *testing.T, e *e2e, kubeconfig string) {
	l := e.l
	cs := clientFor(t, kubeconfig)
	ctx := context.Background()
	kubectl := func(t *testing.T, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(filepath.Join(e.kube[0], v1alpha1.DefaultKubernetesVersion, "kubectl"), append([]string{"--kubeconfig", kubeconfig, "--request-timeout", "30s"}, args...)...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	workers := l.Workers()

	t.Run("every Node runs containerd and the kubelet; masters keep their taint", func(t *testing.T) {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != len(l.Hosts) {
			t.Errorf("%d Nodes, want %d", len(list.Items), len(l.Hosts))
		}
		for _, n := range list.Items {
			info := n.Status.NodeInfo
			if !strings.HasPrefix(info.ContainerRuntimeVersion, "containerd://2.4.") {
				t.Errorf("Node %s: container runtime %q, want containerd://2.4.x", n.Name, info.ContainerRuntimeVersion)
			}
			if info.KubeletVersion != v1alpha1.DefaultKubernetesVersion {
				t.Errorf("Node %s: kubelet %q, want %s", n.Name, info.KubeletVersion, v1alpha1.DefaultKubernetesVersion)
			}
			isMaster := slices.ContainsFunc(l.Masters(), func(h labtest.Host) bool { return h.Name == n.Name })
			tainted := slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == master.ControlPlaneTaint })
			if tainted != isMaster {
				t.Errorf("Node %s: control-plane taint %v, want %v (taints %v)", n.Name, tainted, isMaster, n.Spec.Taints)
			}
			if len(n.Spec.PodCIDRs) == 0 {
				t.Errorf("Node %s has no pod CIDR", n.Name)
			}
			for _, tt := range n.Spec.Taints {
				if strings.Contains(tt.Key, "no-runtime") {
					t.Errorf("Node %s still carries %s", n.Name, tt.Key)
				}
			}
		}
	})
	if t.Failed() {
		return
	}

	image := testappImage(t, e.kube[0])
	var pods []corev1.Pod
	// lookupFrom resolves name in pod p, as its programs would.
	lookupFrom := func(t *testing.T, p corev1.Pod, name string) (string, error) {
		return kubectl(t, "exec", "-n", testappNamespace, p.Name, "--", testappBinary, "lookup", "-timeout", "3s", name)
	}
	t.Run("a Deployment of the test image runs one pod on each worker", func(t *testing.T) {
		start := time.Now()
		if err := createTestapp(ctx, cs, image, int32(len(workers))); err != nil {
			t.Fatal(err)
		}
		pods = waitTestappRunning(t, cs, len(workers), 3*time.Minute)
		t.Logf("Deployment of %d created → every pod Running in %s", len(workers), fmtDuration(time.Since(start)))
		var nodes []string
		for _, p := range pods {
			nodes = append(nodes, p.Spec.NodeName)
		}
		slices.Sort(nodes)
		var want []string
		for _, w := range workers {
			want = append(want, w.Name)
		}
		slices.Sort(want)
		if !slices.Equal(nodes, want) {
			t.Errorf("pods on %v, want one on each worker %v", nodes, want)
		}
	})
	if t.Failed() || len(pods) < 2 {
		return
	}

	t.Run("pods reach each other across workers", func(t *testing.T) {
		for i, p := range pods {
			peer := pods[(i+1)%len(pods)]
			out, err := kubectl(t, "exec", "-n", testappNamespace, p.Name, "--", testappBinary, "get", "http://"+peer.Status.PodIP+":8080/")
			if err != nil || out != peer.Name {
				t.Errorf("%s (%s) → %s (%s): %q, %v", p.Name, p.Spec.NodeName, peer.Name, peer.Status.PodIP, out, err)
			}
		}
	})

	t.Run("pods that always pull an imported image run: the node's image mirror answers for the registry", func(t *testing.T) {
		// The lab has no route to any registry: containerd resolves the
		// tag through the agent's mirror on loopback, or the pull fails.
		d := testappDeployment("always-pull", image, int32(len(workers)), true)
		d.Spec.Template.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
		start := time.Now()
		if _, err := cs.AppsV1().Deployments(testappNamespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cs.AppsV1().Deployments(testappNamespace).Delete(ctx, d.Name, metav1.DeleteOptions{})
		}()
		waitAppRunning(t, cs, d.Name, len(workers), 2*time.Minute)
		t.Logf("Deployment of %d pods with imagePullPolicy Always → every pod Running in %s", len(workers), fmtDuration(time.Since(start)))
		pulled := 0
		evs, err := cs.CoreV1().Events(testappNamespace).List(ctx, metav1.ListOptions{FieldSelector: "reason=Pulled"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs.Items {
			if strings.HasPrefix(ev.InvolvedObject.Name, d.Name+"-") && strings.Contains(ev.Message, "Successfully pulled") {
				pulled++
			}
		}
		if pulled < len(workers) {
			t.Errorf("%d Pulled events saying the image was pulled, want one per pod (%d): the kubelet did not pull", pulled, len(workers))
		}
	})

	t.Run("kube-proxy: a ClusterIP reaches pods on both workers, a NodePort answers on every node", func(t *testing.T) {
		for _, h := range l.Hosts {
			if got := l.Run(t, h.Name, "systemctl is-active kube-proxy.service"); got != "active" {
				t.Errorf("%s: kube-proxy is %s", h.Name, got)
			}
		}
		svc, err := cs.CoreV1().Services(testappNamespace).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "testapp"},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeNodePort,
				Selector: map[string]string{"app": "testapp"},
				Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intOrString(8080)}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, p := range pods {
			want[p.Name] = true
		}
		// From the pod on the first worker, through the ClusterIP, until
		// both pods have answered (each request picks a backend).
		from := pods[0]
		seen := map[string]bool{}
		url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, "80") + "/"
		waitFor(t, time.Minute, "the ClusterIP "+url+" to answer from both pods", func() bool {
			out, err := kubectl(t, "exec", "-n", testappNamespace, from.Name, "--", testappBinary, "get", "-timeout", "2s", url)
			if err == nil && want[out] {
				seen[out] = true
			}
			return len(seen) == len(want)
		})
		// From each machine itself, on the host's network as the
		// apiserver calls an admission webhook: the lab's machines have
		// no default route, so this takes the pod network's route to the
		// Service CIDR ("network is unreachable" without it).
		get := fmt.Sprintf(`timeout 3 bash -c 'exec 3<>/dev/tcp/%s/80 && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>&1 || true`, svc.Spec.ClusterIP)
		for _, h := range l.Hosts {
			var last string
			answered := func() bool {
				last = l.Run(t, h.Name, get)
				for name := range want {
					if strings.Contains(last, name) {
						return true
					}
				}
				return false
			}
			if !waitUntil(30*time.Second, answered) {
				t.Errorf("%s itself cannot reach the ClusterIP %s: %s", h.Name, url, last)
			}
		}
		np := svc.Spec.Ports[0].NodePort
		for _, h := range l.Hosts {
			u := "http://" + net.JoinHostPort(h.Address.String(), strconv.Itoa(int(np))) + "/"
			waitFor(t, time.Minute, "the NodePort "+u+" to answer", func() bool {
				out, err := httpGet(u)
				return err == nil && want[strings.TrimSpace(out)]
			})
		}
	})

	t.Run("Services: session affinity, one without a selector, endpoints that follow a scaled Deployment", func(t *testing.T) {
		servicesE2E(t, ctx, cs, image, pods, func(t *testing.T, p corev1.Pod, url string) (string, error) {
			return kubectl(t, "exec", "-n", testappNamespace, p.Name, "--", testappBinary, "get", "-timeout", "2s", url)
		})
	})

	t.Run("cluster DNS: CoreDNS answers for Services and pods, and through the loss of a replica", func(t *testing.T) {
		// Init made CoreDNS when only the first worker had joined, and
		// it took both replicas; the apply that added the second worker
		// moved one there (addons.Spread).
		var where []string
		var seen string // what the wait last saw, told if it fails
		defer func() {
			if t.Failed() {
				t.Logf("CoreDNS when the wait ended: %s", seen)
			}
		}()
		waitFor(t, 3*time.Minute, "CoreDNS's two replicas to be ready, one on each worker", func() bool {
			d, err := cs.AppsV1().Deployments(metav1.NamespaceSystem).Get(ctx, addons.CoreDNSName, metav1.GetOptions{})
			if err != nil || d.Status.ReadyReplicas != addons.CoreDNSReplicas {
				seen = fmt.Sprintf("Deployment: %v", err)
				if d != nil {
					seen = fmt.Sprintf("%d of %d replicas ready, error %v", d.Status.ReadyReplicas, addons.CoreDNSReplicas, err)
				}
				return false
			}
			list, err := cs.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: addons.DNSLabel + "=" + addons.DNSLabelValue})
			if err != nil {
				seen = fmt.Sprintf("pods: %v", err)
				return false
			}
			where = where[:0]
			for _, p := range list.Items {
				if p.DeletionTimestamp == nil && !slices.Contains(where, p.Spec.NodeName) {
					where = append(where, p.Spec.NodeName)
				}
			}
			seen = fmt.Sprintf("%d pods, on %v", len(list.Items), where)
			return len(where) == len(workers)
		})
		t.Logf("CoreDNS runs on %v", where)
		headless, err := cs.CoreV1().Services(testappNamespace).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "testapp-pods"},
			Spec: corev1.ServiceSpec{
				ClusterIP: corev1.ClusterIPNone,
				Selector:  map[string]string{"app": "testapp"},
				Ports:     []corev1.ServicePort{{Port: 8080}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := cs.CoreV1().Services(testappNamespace).Get(ctx, "testapp", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		kube, err := cs.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var podIPs []string
		for _, p := range pods {
			podIPs = append(podIPs, p.Status.PodIP)
		}
		slices.Sort(podIPs)
		domain := v1alpha1.DefaultClusterDomain
		want := map[string]string{
			"kubernetes.default":                                      kube.Spec.ClusterIP,
			"testapp." + testappNamespace + ".svc." + domain:          svc.Spec.ClusterIP,
			headless.Name + "." + testappNamespace + ".svc." + domain: strings.Join(podIPs, "\n"),
		}
		lookup := func(name string) (string, error) { return lookupFrom(t, pods[0], name) }
		for name, addr := range want {
			var got string
			waitFor(t, 30*time.Second, name+" to resolve to "+addr, func() bool {
				got, err = lookup(name)
				return err == nil && got == addr
			})
		}
		// One replica gone: the other answers, as soon as kube-proxy has
		// dropped the dead one.
		list, err := cs.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: addons.DNSLabel + "=" + addons.DNSLabelValue})
		if err != nil || len(list.Items) == 0 {
			t.Fatalf("CoreDNS pods: %v %v", list, err)
		}
		zero := int64(0)
		if err := cs.CoreV1().Pods(metav1.NamespaceSystem).Delete(ctx, list.Items[0].Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		waitFor(t, 10*time.Second, "names to resolve after a CoreDNS pod was deleted", func() bool {
			got, err := lookup("kubernetes.default")
			return err == nil && got == kube.Spec.ClusterIP
		})
		t.Logf("CoreDNS pod %s deleted → names resolve again in %s", list.Items[0].Name, fmtDuration(time.Since(start)))
		// The replacement goes to the node that lost a replica
		// (topology spread), not next to the other one.
		waitFor(t, time.Minute, "CoreDNS's replacement to be ready, one replica on each worker", func() bool {
			d, err := cs.AppsV1().Deployments(metav1.NamespaceSystem).Get(ctx, addons.CoreDNSName, metav1.GetOptions{})
			if err != nil || d.Status.ReadyReplicas != addons.CoreDNSReplicas {
				return false
			}
			list, err := cs.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: addons.DNSLabel + "=" + addons.DNSLabelValue})
			if err != nil {
				return false
			}
			nodes := map[string]bool{}
			for _, p := range list.Items {
				nodes[p.Spec.NodeName] = true
			}
			seen = dnsPlacement(ctx, cs)
			return len(nodes) == len(workers)
		})
		t.Logf("after the replacement: %s", seen)
	})

	t.Run("kubectl logs, exec and port-forward", func(t *testing.T) {
		p := pods[0]
		if out, err := kubectl(t, "logs", "-n", testappNamespace, p.Name); err != nil || !strings.Contains(out, "serving "+p.Name) {
			t.Errorf("logs %s: %q, %v", p.Name, out, err)
		}
		if out, err := kubectl(t, "exec", "-n", testappNamespace, p.Name, "--", testappBinary, "get", "http://127.0.0.1:8080/healthz"); err != nil || out != "ok" {
			t.Errorf("exec %s: %q, %v", p.Name, out, err)
		}
		portForward(t, kubeconfig, filepath.Join(e.kube[0], v1alpha1.DefaultKubernetesVersion, "kubectl"), p)
	})

	t.Run("a kubelet serving certificate not signed by the cluster CA is refused", func(t *testing.T) {
		p := pods[0]
		node := p.Spec.NodeName
		// The kubelet's serving pair, replaced by a self-signed one for the
		// same names, then put back.
		const cur = "/var/lib/kubelet/pki/kubelet-server-current.pem"
		forged := selfSignedPair(t, node, p.Status.HostIP)
		l.Run(t, node, "set -e; cp -P "+cur+" /root/kubelet-server-saved; umask 077; cat > /root/forged.pem <<'EOF'\n"+forged+"EOF\nln -sfn /root/forged.pem "+cur+"; systemctl restart kubelet")
		defer func() {
			l.Run(t, node, "mv -fT /root/kubelet-server-saved "+cur+"; rm -f /root/forged.pem; systemctl restart kubelet")
			waitFor(t, 2*time.Minute, "kubectl logs to work again on "+node, func() bool {
				_, err := kubectl(t, "logs", "-n", testappNamespace, p.Name)
				return err == nil
			})
		}()
		var out string
		waitFor(t, time.Minute, "the apiserver to refuse the forged certificate of "+node, func() bool {
			var err error
			out, err = kubectl(t, "logs", "-n", testappNamespace, p.Name)
			return err != nil && strings.Contains(out, "x509")
		})
		t.Logf("refused: %s", out)
	})

	t.Run("a stopped worker's pods run again after it starts", func(t *testing.T) {
		w := workers[len(workers)-1]
		dns, err := cs.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: addons.DNSLabel + "=" + addons.DNSLabelValue})
		if err != nil {
			t.Fatal(err)
		}
		runsDNS := slices.ContainsFunc(dns.Items, func(p corev1.Pod) bool { return p.Spec.NodeName == w.Name })
		// The machine is stopped in a steady cluster: the kubelet restarts
		// of the test before leave a node's replica unready for a few
		// seconds, and while it is, its node's queries go to the others.
		waitFor(t, time.Minute, "every CoreDNS endpoint to be ready and kept for its node", func() bool { return dnsSteady(ctx, cs) })
		t.Logf("before %s stops: %s", w.Name, dnsPlacement(ctx, cs))
		stopped := time.Now().Add(-time.Second) // the API's times are whole seconds
		l.Stop(t, w.Name, false)
		started := false
		defer func() {
			if !started {
				l.Start(t, w.Name)
			}
		}()
		// The worker ran a CoreDNS replica. Its endpoint stays in the
		// kube-dns Service until the Node is found NotReady (the
		// controller-manager's node-monitor grace period, 50 s), but the
		// Service keeps a pod's queries on its own node's replica
		// (trafficDistribution PreferSameNode), so a pod on the other
		// worker never sends one to the stopped worker: names resolve
		// there within the 10 s, lookups of 3 s each.
		if i := slices.IndexFunc(pods, func(p corev1.Pod) bool { return p.Spec.NodeName != w.Name }); runsDNS && i >= 0 {
			start := time.Now()
			var last string
			defer func() {
				if t.Failed() {
					t.Logf("last lookup from %s: %s; %s", pods[i].Spec.NodeName, last, dnsPlacement(ctx, cs))
				}
			}()
			waitFor(t, 10*time.Second, "names to resolve with the worker running a CoreDNS replica stopped", func() bool {
				out, err := lookupFrom(t, pods[i], "kubernetes.default")
				last = fmt.Sprintf("%q, %v", out, err)
				return err == nil
			})
			t.Logf("%s, running a CoreDNS replica, stopped → names resolve from %s after %s (goal 10 s)", w.Name, pods[i].Spec.NodeName, fmtDuration(time.Since(start)))
		} else {
			t.Errorf("%s runs no CoreDNS replica (%d replicas), or no test pod runs elsewhere: the two are spread over the workers", w.Name, len(dns.Items))
		}
		started = true
		l.Start(t, w.Name)
		waitFor(t, 3*time.Minute, "the pod on "+w.Name+" to run again", func() bool {
			list, err := cs.CoreV1().Pods(testappNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=testapp"})
			if err != nil {
				return false
			}
			for _, p := range list.Items {
				// Running in a container started since the machine stopped,
				// not the status posted before it went down.
				if p.Spec.NodeName == w.Name && p.Status.Phase == corev1.PodRunning && podReady(p) && startedSince(p, stopped) {
					return true
				}
			}
			return false
		})
		nodesReady(t, kubeconfig, namesExcept(l))
	})

	t.Run("a deleted Node's pod route is gone from the others", func(t *testing.T) {
		w, other := workers[len(workers)-1], workers[0]
		n, err := cs.CoreV1().Nodes().Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cidr := n.Spec.PodCIDR
		route := func() string { return l.Run(t, other.Name, "ip -4 route show proto 97") }
		if !strings.Contains(route(), cidr) {
			t.Fatalf("%s has no route to %s's pods %s:\n%s", other.Name, w.Name, cidr, route())
		}
		if err := cs.CoreV1().Nodes().Delete(ctx, w.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, other.Name+" to drop the route to "+cidr, func() bool { return !strings.Contains(route(), cidr) })
		// The kubelet registers its Node again when it starts.
		l.Run(t, w.Name, "systemctl restart kubelet")
		var newCIDR string
		waitFor(t, 2*time.Minute, w.Name+" to be registered and routed again", func() bool {
			n, err := cs.CoreV1().Nodes().Get(ctx, w.Name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			newCIDR = n.Spec.PodCIDR
			return n.Spec.PodCIDR != "" && strings.Contains(route(), n.Spec.PodCIDR)
		})
		// Registered again, the Node may have another pod range. Its pods
		// that ran through (kept addresses nothing routes to) are made
		// again, and new ones are set up, in the range it has now.
		prefix, err := netip.ParsePrefix(newCIDR)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s's pod range: %s before its Node was deleted, %s after", w.Name, cidr, newCIDR)
		waitFor(t, 2*time.Minute, "the test pod on "+w.Name+" to run with an address of "+newCIDR, func() bool {
			list, err := cs.CoreV1().Pods(testappNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=testapp"})
			if err != nil {
				return false
			}
			for _, p := range list.Items {
				a, err := netip.ParseAddr(p.Status.PodIP)
				if p.Spec.NodeName == w.Name && err == nil && prefix.Contains(a) && podReady(p) {
					return true
				}
			}
			return false
		})
	})

	if err := cs.CoreV1().Namespaces().Delete(ctx, testappNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
}

const testappNamespace = "anvil-e2e"

// dnsPlacement tells where CoreDNS's pods run and what the kube-dns
// EndpointSlices hold, hints included: what a failed lookup is judged by.
func dnsPlacement(ctx context.Context, cs kubernetes.Interface) string {
	var b strings.Builder
	pods, err := cs.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: addons.DNSLabel + "=" + addons.DNSLabelValue})
	if err != nil {
		return fmt.Sprintf("CoreDNS pods: %v", err)
	}
	b.WriteString("CoreDNS pods:")
	for _, p := range pods.Items {
		fmt.Fprintf(&b, " %s on %s (%s, ready %v, deleting %v)", p.Name, p.Spec.NodeName, p.Status.PodIP, podReady(p), p.DeletionTimestamp != nil)
	}
	eps, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + addons.DNSServiceName})
	if err != nil {
		return b.String() + fmt.Sprintf("; EndpointSlices: %v", err)
	}
	b.WriteString("; kube-dns endpoints:")
	for _, s := range eps.Items {
		for _, ep := range s.Endpoints {
			fmt.Fprintf(&b, " %v node %s ready %v hints %v", ep.Addresses, ptrString(ep.NodeName), ep.Conditions.Ready != nil && *ep.Conditions.Ready, ep.Hints)
		}
	}
	return b.String()
}

// dnsSteady says whether every CoreDNS replica is a ready endpoint of
// kube-dns, hinted for its own node (trafficDistribution PreferSameNode).
func dnsSteady(ctx context.Context, cs kubernetes.Interface) bool {
	eps, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + addons.DNSServiceName})
	if err != nil {
		return false
	}
	n := 0
	for _, s := range eps.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || !*ep.Conditions.Ready || ep.Hints == nil || len(ep.Hints.ForNodes) == 0 {
				return false
			}
			n++
		}
	}
	return n == addons.CoreDNSReplicas
}

func ptrString(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

// testappImage is the reference of the test image the build in kubeDir
// ships, as its payload names it.
func testappImage(t testing.TB, kubeDir string) string {
	t.Helper()
	payload, err := images.ReadPayload(filepath.Join(kubeDir, v1alpha1.DefaultKubernetesVersion))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range payload.Files {
		if strings.HasPrefix(f.Image, images.TestappRepo+":") {
			return f.Image
		}
	}
	t.Fatalf("the payload in %s ships no %s image", kubeDir, images.TestappRepo)
	return ""
}

// testappBinary is the test program inside its image (its entry point).
const testappBinary = "/testapp"

// createTestapp creates a Deployment of replicas testapp pods, at most one
// per node.
func createTestapp(ctx context.Context, cs kubernetes.Interface, image string, replicas int32) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testappNamespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_, err := cs.AppsV1().Deployments(testappNamespace).Create(ctx, testappDeployment("testapp", image, replicas, true), metav1.CreateOptions{})
	return err
}

// testappDeployment runs the test image as name (its pods labelled
// app=name), at most one pod per node when spread.
func testappDeployment(name, image string, replicas int32, spread bool) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	env := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	var affinity *corev1.Affinity
	if spread {
		affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: corev1.LabelHostname,
			}},
		}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testappNamespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: affinity,
					Containers: []corev1.Container{{
						Name: "testapp", Image: image, ImagePullPolicy: corev1.PullNever,
						Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
						Env:            []corev1.EnvVar{env("POD_NAME", "metadata.name"), env("NODE_NAME", "spec.nodeName"), env("POD_IP", "status.podIP")},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intOrString(8080)}}, PeriodSeconds: 1},
					}},
				},
			},
		},
	}
}

// readyEndpoints counts the ready endpoints of Service svc across its
// EndpointSlices, and the pods Ready with label app=app.
func readyEndpoints(ctx context.Context, cs kubernetes.Interface, svc, app string) (endpoints, pods int, err error) {
	es, err := cs.DiscoveryV1().EndpointSlices(testappNamespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return 0, 0, err
	}
	for _, s := range es.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				endpoints++
			}
		}
	}
	list, err := cs.CoreV1().Pods(testappNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return 0, 0, err
	}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && podReady(p) {
			pods++
		}
	}
	return endpoints, pods, nil
}

// waitTestappRunning waits until n testapp pods are Running and Ready.
func waitTestappRunning(t *testing.T, cs kubernetes.Interface, n int, timeout time.Duration) []corev1.Pod {
	t.Helper()
	return waitAppRunning(t, cs, "testapp", n, timeout)
}

// waitAppRunning waits until n pods labelled app=app are Running and Ready.
func waitAppRunning(t *testing.T, cs kubernetes.Interface, app string, n int, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var last string
	ok := waitUntil(timeout, func() bool {
		list, err := cs.CoreV1().Pods(testappNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			last = err.Error()
			return false
		}
		pods = pods[:0]
		var states []string
		for _, p := range list.Items {
			states = append(states, fmt.Sprintf("%s on %q: %s %s", p.Name, p.Spec.NodeName, p.Status.Phase, podWaiting(p)))
			if p.Status.Phase == corev1.PodRunning && podReady(p) && p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		last = strings.Join(states, "; ")
		return len(pods) == n
	})
	if !ok {
		t.Fatalf("%d of %d %s pods Running and Ready after %s: %s", len(pods), n, app, timeout, last)
	}
	return pods
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podWaiting says why a pod's containers wait, for failure messages.
func podWaiting(p corev1.Pod) string {
	var out []string
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			out = append(out, string(c.Type)+": "+c.Message)
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			out = append(out, s.State.Waiting.Reason+": "+s.State.Waiting.Message)
		}
	}
	return strings.Join(out, "; ")
}

// portForward runs kubectl port-forward to p's port 8080 and reads the pod's
// name through it.
func portForward(t *testing.T, kubeconfig, kubectl string, p corev1.Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "port-forward", "-n", testappNamespace, "pod/"+p.Name, "--address", "127.0.0.1", "18080:8080")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	var body string
	ok := waitUntil(30*time.Second, func() bool {
		res, err := httpGet("http://127.0.0.1:18080/")
		body = res
		return err == nil
	})
	if !ok || body != p.Name {
		t.Errorf("port-forward to %s: %q (kubectl: %s)", p.Name, body, out.String())
	}
}

// waitUntil polls ok every half second until it holds or timeout passes.
func waitUntil(timeout time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitFor fails the test when ok does not hold within timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	if !waitUntil(timeout, ok) {
		t.Fatalf("gave up after %s waiting for %s", timeout, what)
	}
}

// httpGet is a GET's body, trimmed, with a short timeout.
func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

func intOrString(port int32) intstr.IntOrString { return intstr.FromInt32(port) }

// selfSignedPair is a certificate and key in one PEM, for the names a
// kubelet serves as, signed by nobody the cluster knows.
func selfSignedPair(t *testing.T, name, ip string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{name}, IPAddresses: []net.IP{net.ParseIP(ip)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) + string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

// startedSince reports whether every container of p runs since t.
func startedSince(p corev1.Pod, t time.Time) bool {
	if len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running == nil || c.State.Running.StartedAt.Time.Before(t) {
			return false
		}
	}
	return true
}

// addonsReapplyE2E plays a user who edits CoreDNS: a field anvil sets
// (replicas) and one it does not (an annotation), and deletes the
// PodDisruptionBudget. The next apply plans the re-apply, puts anvil's
// back and keeps the user's; the one after plans nothing.
func addonsReapplyE2E(t *testing.T, clusterFile, kubeconfig string, apply func(*testing.T, Options) (*ApplyResult, error)) {
	cs := clientFor(t, kubeconfig)
	ctx := context.Background()
	deploys := cs.AppsV1().Deployments(metav1.NamespaceSystem)
	d, err := deploys.Get(ctx, addons.CoreDNSName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations["example.com/owner"] = "team-dns"
	d.Spec.Replicas = ptrTo(int32(1))
	if _, err := deploys.Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	if err := cs.PolicyV1().PodDisruptionBudgets(metav1.NamespaceSystem).Delete(ctx, addons.CoreDNSName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	o, _ := options(t, clusterFile)
	res, err := apply(t, o)
	if err != nil {
		t.Fatal(err)
	}
	var changes []string
	for _, s := range res.Plan {
		if s.Change {
			changes = append(changes, s.Host+": "+s.Do)
		}
	}
	if len(changes) != 1 || !strings.Contains(changes[0], "re-apply the cluster add-ons") ||
		!strings.Contains(changes[0], "deployment/kube-system/coredns") || !strings.Contains(changes[0], "poddisruptionbudget/kube-system/coredns") {
		t.Errorf("the apply after the edits planned %q, want only the add-ons' re-apply naming the Deployment and the PDB", changes)
	}
	d, err = deploys.Get(ctx, addons.CoreDNSName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != addons.CoreDNSReplicas || d.Annotations["example.com/owner"] != "team-dns" {
		t.Errorf("after the re-apply: replicas %d (want anvil's %d), annotations %v (want the user's kept)", *d.Spec.Replicas, addons.CoreDNSReplicas, d.Annotations)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(metav1.NamespaceSystem).Get(ctx, addons.CoreDNSName, metav1.GetOptions{}); err != nil {
		t.Errorf("the PodDisruptionBudget is not back: %v", err)
	}
	res, err = apply(t, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Plan {
		if s.Change {
			t.Errorf("the apply after the re-apply changes something: %+v", s)
		}
	}
	// The scale-down and back leave a replica starting; what follows
	// (status) judges a settled cluster.
	waitFor(t, 3*time.Minute, "CoreDNS's two replicas to be ready again", func() bool {
		d, err := deploys.Get(ctx, addons.CoreDNSName, metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == addons.CoreDNSReplicas
	})
}

func ptrTo[T any](v T) *T { return &v }

// servicesE2E checks what kube-proxy and the endpoint controllers do for
// Services beyond plain load balancing, with get fetching a URL from
// inside a pod: ClientIP session affinity keeps a client on one backend,
// a Service without a selector routes to the EndpointSlice a user wrote,
// and a Service's endpoints follow a Deployment scaled 0 → 3 → 1 within
// 2 s of its pods' readiness changing.
func servicesE2E(t *testing.T, ctx context.Context, cs kubernetes.Interface, image string, pods []corev1.Pod, get func(*testing.T, corev1.Pod, string) (string, error)) {
	if len(pods) < 2 {
		t.Fatalf("%d test pods, want one on each of 2 workers", len(pods))
	}
	svcs := cs.CoreV1().Services(testappNamespace)
	url := func(s *corev1.Service) string { return "http://" + net.JoinHostPort(s.Spec.ClusterIP, "80") + "/" }

	sticky, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "testapp-sticky"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "testapp"}, SessionAffinity: corev1.ServiceAffinityClientIP,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intOrString(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var first string
	waitFor(t, time.Minute, "the sticky Service to answer", func() bool {
		first, err = get(t, pods[0], url(sticky))
		return err == nil && first != ""
	})
	for i := range 8 {
		if got, err := get(t, pods[0], url(sticky)); err != nil || got != first {
			t.Errorf("request %d through the ClientIP-affine Service: %q %v, want the same backend %s", i+2, got, err, first)
		}
	}

	manual, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "testapp-manual"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intOrString(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := true
	port, proto := int32(8080), corev1.ProtocolTCP
	if _, err := cs.DiscoveryV1().EndpointSlices(testappNamespace).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "testapp-manual-1", Labels: map[string]string{discoveryv1.LabelServiceName: manual.Name, discoveryv1.LabelManagedBy: "anvil-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{pods[1].Status.PodIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Port: &port, Protocol: &proto}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the Service without a selector to answer from "+pods[1].Name, func() bool {
		got, err := get(t, pods[0], url(manual))
		return err == nil && got == pods[1].Name
	})

	deploys := cs.AppsV1().Deployments(testappNamespace)
	if _, err := deploys.Create(ctx, testappDeployment("scaler", image, 0, false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "scaler"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "scaler"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intOrString(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	scale := func(n int32) {
		t.Helper()
		patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
		if _, err := deploys.Patch(ctx, "scaler", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// follow waits until n pods are Ready (or, scaling down, no longer
	// counted) and then measures how long the endpoints take to agree.
	follow := func(n int) {
		t.Helper()
		var podsAt time.Time
		waitFor(t, 3*time.Minute, fmt.Sprintf("scaler's endpoints to follow %d ready pods", n), func() bool {
			eps, ready, err := readyEndpoints(ctx, cs, "scaler", "scaler")
			if err != nil {
				return false
			}
			if ready == n && podsAt.IsZero() {
				podsAt = time.Now()
			}
			return ready == n && eps == n
		})
		lag := time.Since(podsAt)
		t.Logf("scaled to %d: endpoints followed the pods in %s", n, fmtDuration(lag))
		if lag > 2*time.Second {
			t.Errorf("scaled to %d: the endpoints took %s after the pods (want ≤ 2 s)", n, fmtDuration(lag))
		}
	}
	follow(0)
	scale(3)
	follow(3)
	scale(1)
	follow(1)
}
