package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/master"
)

// TestStaticPodLayoutE2E applies a cluster of one master and one worker in
// the static-pod layout: the master's kubelet runs etcd and the control
// plane from /etc/kubernetes/manifests (mirror pods in kube-system, no unit
// of theirs), a killed apiserver is restarted by the kubelet, the worker
// runs a pod, the CIS benchmark finds nothing failing on the master, and a
// reset leaves both machines clean.
func TestStaticPodLayoutE2E(t *testing.T) {
	labtest.Require(t)
	bin, kube := buildAnvil(t), kubeDirs(t)
	l := labtest.Start(t, labtest.Options{Masters: 1, Workers: 1})
	file := rewrite(t, l, func(c *v1alpha1.Cluster) { c.ControlPlane.Layout = v1alpha1.LayoutStaticPod })
	kubeconfig := filepath.Join(t.TempDir(), "admin.conf")
	m1, w1 := l.Masters()[0].Name, l.Workers()[0].Name
	ctx := context.Background()

	o, _ := options(t, file)
	// The user's cache of compressed binaries, as apply uses it.
	if _, err := Apply(ctx, ApplyOptions{Options: o, Anvil: bin, KubeDirs: kube, Kubeconfig: kubeconfig, Timeout: 5 * time.Minute}); err != nil {
		o.Progress.Close()
		t.Fatal(err)
	}
	o.Progress.Close()
	cs := clientFor(t, kubeconfig)
	controlPlane := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

	t.Run("the kubelet runs the control plane as static pods", func(t *testing.T) {
		for _, c := range controlPlane {
			p := waitMirrorPodReady(t, cs, c+"-"+m1, 0)
			if p.Spec.NodeName != m1 {
				t.Errorf("%s runs on %q", p.Name, p.Spec.NodeName)
			}
			// Each from the image the master made of its own binary
			// (etcd runs in anvil's).
			bin := c
			if c == "etcd" {
				bin = images.AnvilBinary
			}
			if got, want := p.Spec.Containers[0].Image, images.ImageRef(v1alpha1.DefaultKubernetesVersion, bin); got != want {
				t.Errorf("%s runs image %s, want %s", p.Name, got, want)
			}
			if got := l.Run(t, m1, "test -f /etc/kubernetes/manifests/"+c+".yaml && echo ok"); got != "ok" {
				t.Errorf("no manifest for %s", c)
			}
			// No unit runs it: the kubelet does.
			if got := l.Run(t, m1, "systemctl show -p LoadState --value "+c+".service"); got != "not-found" {
				t.Errorf("%s.service is %s, want no unit", c, got)
			}
		}
		if got := l.Run(t, m1, "systemctl is-active kubelet.service containerd.service anvil-agent.service | tr '\\n' ' '"); got != "active active active" {
			t.Errorf("the node stack's units: %q", got)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("a killed apiserver is restarted by the kubelet", func(t *testing.T) {
		name := "kube-apiserver-" + m1
		before := waitMirrorPodReady(t, cs, name, 0)
		restarts := before.Status.ContainerStatuses[0].RestartCount
		l.Run(t, m1, "kill -9 $(pidof kube-apiserver)")
		start := time.Now()
		waitMirrorPodReady(t, cs, name, restarts+1)
		t.Logf("apiserver killed → restarted and Ready in %s", fmtDuration(time.Since(start)))
	})

	t.Run("the worker runs a pod", func(t *testing.T) {
		if err := createTestapp(ctx, cs, testappImage(t, kube[0]), 1); err != nil {
			t.Fatal(err)
		}
		pods := waitTestappRunning(t, cs, 1, 3*time.Minute)
		if pods[0].Spec.NodeName != w1 {
			t.Errorf("the pod runs on %s, want %s (the master keeps its taint)", pods[0].Spec.NodeName, w1)
		}
	})

	t.Run("a renewal restarts the static pods that read the renewed certificates", func(t *testing.T) {
		// Everything falls due within 400 days: renewed now, ahead.
		out := l.Run(t, m1, anvilOnHost+" certs renew-due --within 9600h -o json")
		var res master.RenewResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Renewal == nil {
			t.Fatalf("renew-due: %v\n%s", err, out)
		}
		t.Logf("renewed %d, restarted %v in %s", len(res.Renewal.Renewed), res.Renewal.Restarted, fmtDuration(res.Renewal.Finished.Sub(res.Renewal.Time)))
		for _, c := range controlPlane {
			if !slices.Contains(res.Renewal.Restarted, c) {
				t.Errorf("restarted %v, not %s", res.Renewal.Restarted, c)
			}
			// Started again: the manifest left and came back (the
			// mirror pod object may stay).
			p := waitMirrorPodReady(t, cs, c+"-"+m1, 0)
			if r := p.Status.ContainerStatuses[0].State.Running; r == nil || r.StartedAt.Time.Before(res.Renewal.Time.Add(-time.Second)) {
				t.Errorf("%s: its container runs since %v, before the renewal at %s", p.Name, r, res.Renewal.Time)
			}
		}
		if got := l.Run(t, m1, "ls /etc/kubernetes/manifests | wc -l"); got != strconv.Itoa(len(controlPlane)+1) {
			t.Errorf("manifests: %s", l.Run(t, m1, "ls /etc/kubernetes/manifests"))
		}
		// Nothing is due any more.
		if out := l.Run(t, m1, anvilOnHost+" certs renew-due"); !strings.Contains(out, "nothing due") {
			t.Errorf("a second run: %s", out)
		}
	})

	t.Run("the CIS benchmark finds nothing failing on the master", func(t *testing.T) {
		cisE2E(t, l, m1, v1alpha1.LayoutStaticPod)
	})

	t.Run("reset leaves the machines clean", func(t *testing.T) {
		o, _ := options(t, file)
		_, err := Reset(ctx, ResetOptions{Options: o, Kubeconfig: kubeconfig})
		o.Progress.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range l.Hosts {
			assertClean(t, l, h.Name)
		}
	})
}

// waitMirrorPodReady waits until the mirror pod name in kube-system is
// Running and Ready with at least restarts restarts, and returns it.
func waitMirrorPodReady(t *testing.T, cs kubernetes.Interface, name string, restarts int32) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	var last string
	ok := waitUntil(3*time.Minute, func() bool {
		p, err := cs.CoreV1().Pods(metav1.NamespaceSystem).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false
		}
		if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; !mirror {
			last = "not a mirror pod"
			return false
		}
		var n int32
		if len(p.Status.ContainerStatuses) > 0 {
			n = p.Status.ContainerStatuses[0].RestartCount
		}
		last = fmt.Sprintf("%s, ready %v, %d restarts %s", p.Status.Phase, podReady(*p), n, podWaiting(*p))
		pod = p
		return p.Status.Phase == corev1.PodRunning && podReady(*p) && n >= restarts
	})
	if !ok {
		t.Fatalf("mirror pod %s: %s", name, last)
	}
	return pod
}
