package installer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/benchreport"
	"anvil.dev/anvil/lab/labtest"
)

// benchWorkloads measures, on the cluster a first apply just made, issue
// 14's figures: apply start → a Deployment's pods Running, pod create →
// Running for 30 pods on one worker (image present), and the steady RSS of
// a worker's stack.
func benchWorkloads(b *testing.B, l *labtest.Lab, kube, kubeconfig string, applyStart time.Time) {
	cs := clientFor(b, kubeconfig)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	image := testappImage(b, kube)
	workers := l.Workers()

	// What a user does after apply: create a Deployment, wait for it.
	w, err := watchPods(ctx, cs, "app=testapp")
	if err != nil {
		b.Fatal(err)
	}
	if err := createTestapp(ctx, cs, image, int32(len(workers))); err != nil {
		b.Fatal(err)
	}
	running, err := w.wait(ctx, len(workers), 3*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	last := slices.MaxFunc(running, func(a, b time.Time) int { return a.Compare(b) })
	benchreport.Report(b, benchreport.Figure{
		Name: "apply start → Deployment's pods Running", Value: last.Sub(applyStart).Seconds(), Unit: "s", Anchor: 75,
		Note: fmt.Sprintf("issue 14: ≤ 75 s on a fresh 3+2 lab (k3s single node ~50 s to ready); %d pods, one per worker; apply itself %s; load %s",
			len(workers), fmtDuration(w.started.Sub(applyStart)), loadAverage()),
	})

	// 30 pods on one worker, created one after the other as fast as the
	// API takes them; each pod's latency is its create call → the watch
	// seeing it Running (the Kubernetes pod startup SLO, image present).
	const n = 30
	node := workers[0].Name
	w, err = watchPods(ctx, cs, "app=startup")
	if err != nil {
		b.Fatal(err)
	}
	created := map[string]time.Time{}
	zero := int64(0)
	for i := range n {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "startup-" + strconv.Itoa(i), Namespace: testappNamespace, Labels: map[string]string{"app": "startup"}},
			Spec: corev1.PodSpec{
				NodeSelector:                  map[string]string{corev1.LabelHostname: node},
				TerminationGracePeriodSeconds: &zero,
				Containers:                    []corev1.Container{{Name: "testapp", Image: image, ImagePullPolicy: corev1.PullNever}},
			},
		}
		created[p.Name] = time.Now()
		if _, err := cs.CoreV1().Pods(testappNamespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := w.wait(ctx, n, 3*time.Minute); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for name, at := range w.running {
		lat = append(lat, at.Sub(created[name]))
	}
	slices.Sort(lat)
	p99 := lat[(len(lat)*99+99)/100-1]
	benchreport.Report(b, benchreport.Figure{
		Name: "pod create → Running, p99 of 30", Value: p99.Seconds(), Unit: "s", Anchor: 2,
		Note: fmt.Sprintf("issue 14: p99 ≤ 2 s for 30 pods on one worker, image present (Kubernetes SLO p99 ≤ 5 s); p50 %s, max %s; load %s",
			fmtDuration(lat[len(lat)/2]), fmtDuration(lat[len(lat)-1]), loadAverage()),
	})
	if err := cs.CoreV1().Pods(testappNamespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{LabelSelector: "app=startup"}); err != nil {
		b.Fatal(err)
	}

	// Steady RSS: each worker back to its one testapp pod, settled.
	time.Sleep(20 * time.Second)
	var worst int64
	var worstNote string
	for _, h := range workers {
		stack, shims, detail := stackRSS(b, l, h.Name)
		if stack > worst {
			worst = stack
			worstNote = fmt.Sprintf("%s: %s; shims %d KiB", h.Name, detail, shims)
		}
	}
	benchreport.Report(b, benchreport.Figure{
		Name: "worker stack RSS (containerd+kubelet+agent)", Value: float64(worst) / 1024, Unit: "MiB", Anchor: 150,
		Note: fmt.Sprintf("issue 14: ≤ 150 MiB (k3s agent ~275 MB); the larger of the workers, each with one pod: %s", worstNote),
	})

	benchServices(b, ctx, cs, l, kube, kubeconfig, image)
}

// benchServices measures issue 15's figures from the testapp pod on the
// second worker: Service endpoint propagation (a new pod on the first
// worker Ready, as a watch here sees it → the Service's ClusterIP answers
// from it, as testapp watch in the pod sees it; both clocks are the host's,
// the lab machines being containers) over 50 changes, and the queries per
// second and latency one CoreDNS replica answers.
func benchServices(b *testing.B, ctx context.Context, cs kubernetes.Interface, l *labtest.Lab, kube, kubeconfig, image string) {
	workers := l.Workers()
	pods, err := cs.CoreV1().Pods(testappNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=testapp", FieldSelector: "spec.nodeName=" + workers[1].Name})
	if err != nil || len(pods.Items) == 0 {
		b.Fatalf("no testapp pod on %s: %v", workers[1].Name, err)
	}
	client := pods.Items[0].Name
	svc, err := cs.CoreV1().Services(testappNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "prop"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "prop"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intOrString(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	kubectl := filepath.Join(kube, v1alpha1.DefaultKubernetesVersion, "kubectl")
	watchCmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "exec", "-n", testappNamespace, client, "--",
		testappBinary, "watch", "-interval", "20ms", "-duration", "8m", "http://"+net.JoinHostPort(svc.Spec.ClusterIP, "80")+"/")
	out, err := watchCmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := watchCmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		watchCmd.Process.Kill()
		watchCmd.Wait()
	}()
	var mu sync.Mutex
	seen := map[string]time.Time{}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 {
				continue
			}
			ns, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				continue
			}
			mu.Lock()
			if _, ok := seen[f[1]]; !ok {
				seen[f[1]] = time.Unix(0, ns)
			}
			mu.Unlock()
		}
	}()
	w, err := watchPods(ctx, cs, "app=prop")
	if err != nil {
		b.Fatal(err)
	}
	const changes = 50
	zero := int64(0)
	var lat []time.Duration
	for i := range changes {
		name := "prop-" + strconv.Itoa(i)
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testappNamespace, Labels: map[string]string{"app": "prop"}},
			Spec: corev1.PodSpec{
				NodeSelector:                  map[string]string{corev1.LabelHostname: workers[0].Name},
				TerminationGracePeriodSeconds: &zero,
				Containers: []corev1.Container{{Name: "testapp", Image: image, ImagePullPolicy: corev1.PullNever,
					Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intOrString(8080)}}, PeriodSeconds: 1}}},
			},
		}
		if _, err := cs.CoreV1().Pods(testappNamespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		ready, err := w.waitReady(ctx, name, 2*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		var reached time.Time
		if !waitUntil(30*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			reached = seen[name]
			return !reached.IsZero()
		}) {
			b.Fatalf("%s Ready at %s, never answered through the ClusterIP", name, ready.Format(time.RFC3339Nano))
		}
		lat = append(lat, max(reached.Sub(ready), 0))
		if i > 0 {
			if err := cs.CoreV1().Pods(testappNamespace).Delete(ctx, "prop-"+strconv.Itoa(i-1), metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
				b.Fatal(err)
			}
		}
	}
	slices.Sort(lat)
	p99 := lat[(len(lat)*99+99)/100-1]
	benchreport.Report(b, benchreport.Figure{
		Name: "Service endpoint propagation, p99 of 50", Value: p99.Seconds(), Unit: "s", Anchor: 2,
		Note: fmt.Sprintf("issue 15: pod Ready → its answer through the ClusterIP from another node, ≤ 2 s (Kubernetes network programming SLO p99 ≤ 30 s); p50 %s, max %s; load %s",
			fmtDuration(lat[len(lat)/2]), fmtDuration(lat[len(lat)-1]), loadAverage()),
	})

	dnsSvc, err := cs.CoreV1().Services(metav1.NamespaceSystem).Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	dnsOut, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "exec", "-n", testappNamespace, client, "--",
		testappBinary, "dnsload", "-server", net.JoinHostPort(dnsSvc.Spec.ClusterIP, "53"), "-parallel", "8", "-duration", "10s",
		"kubernetes.default.svc."+v1alpha1.DefaultClusterDomain).Output()
	if err != nil {
		b.Fatalf("testapp dnsload: %v", err)
	}
	var load struct {
		Queries int     `json:"queries"`
		Errors  int     `json:"errors"`
		QPS     float64 `json:"qps"`
		P50Ms   float64 `json:"p50Ms"`
		P99Ms   float64 `json:"p99Ms"`
	}
	if err := json.Unmarshal(dnsOut, &load); err != nil {
		b.Fatalf("testapp dnsload printed %q: %v", dnsOut, err)
	}
	note := fmt.Sprintf("8 clients in a pod on %s for 10 s through the kube-dns ClusterIP (two replicas behind it): %d answers, %d unanswered; load %s",
		workers[1].Name, load.Queries, load.Errors, loadAverage())
	benchreport.Report(b, benchreport.Figure{
		Name: "cluster DNS queries per second", Value: load.QPS, Unit: "q/s", Anchor: 33667, Better: benchreport.Higher,
		Note: "issue 15: CoreDNS's scaling guide, one replica on a 2-vCPU node, internal names: 33,667 q/s; " + note,
	})
	benchreport.Report(b, benchreport.Figure{
		Name: "cluster DNS latency, p99", Value: load.P99Ms, Unit: "ms", Anchor: 2.404,
		Note: fmt.Sprintf("issue 15: the same guide's latency at that rate, 2.404 ms (a mean); p50 %.2f ms; %s", load.P50Ms, note),
	})
}

// stackRSS reads, on host, the resident memory (KiB) of containerd, the
// kubelet and anvil's agent, and apart from them the containerd shims.
func stackRSS(b *testing.B, l *labtest.Lab, host string) (stack, shims int64, detail string) {
	out := l.Run(b, host, `for d in /proc/[0-9]*; do c=$(cat $d/comm 2>/dev/null) || continue; case "$c" in containerd|kubelet|anvil|containerd-shim*) echo "$c $(awk '/^VmRSS/{print $2}' $d/status 2>/dev/null)";; esac; done`)
	per := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		kib, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		if strings.HasPrefix(f[0], "containerd-shim") {
			shims += kib
			continue
		}
		per[f[0]] += kib
		stack += kib
	}
	for _, c := range []string{"containerd", "kubelet", "anvil"} {
		if per[c] == 0 {
			b.Fatalf("%s: no %s process: %q", host, c, out)
		}
	}
	return stack, shims, fmt.Sprintf("containerd %d KiB, kubelet %d KiB, agent %d KiB", per["containerd"], per["kubelet"], per["anvil"])
}

// podWatch records when each pod of a selector is first seen Running.
type podWatch struct {
	w       watch.Interface
	started time.Time
	running map[string]time.Time
}

func watchPods(ctx context.Context, cs kubernetes.Interface, selector string) (*podWatch, error) {
	w, err := cs.CoreV1().Pods(testappNamespace).Watch(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	return &podWatch{w: w, started: time.Now(), running: map[string]time.Time{}}, nil
}

// wait returns, once n pods are Running, when each was first seen so.
func (p *podWatch) wait(ctx context.Context, n int, timeout time.Duration) ([]time.Time, error) {
	defer p.w.Stop()
	deadline := time.After(timeout)
	for len(p.running) < n {
		select {
		case ev, ok := <-p.w.ResultChan():
			if !ok {
				return nil, fmt.Errorf("pod watch closed with %d of %d Running", len(p.running), n)
			}
			pod, isPod := ev.Object.(*corev1.Pod)
			if !isPod || pod.Status.Phase != corev1.PodRunning {
				continue
			}
			if _, seen := p.running[pod.Name]; !seen {
				p.running[pod.Name] = time.Now()
			}
		case <-deadline:
			return nil, fmt.Errorf("%d of %d pods Running after %s", len(p.running), n, timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var out []time.Time
	for _, t := range p.running {
		out = append(out, t)
	}
	return out, nil
}

// waitReady returns when the watch first saw pod name Ready; the watch
// stays open for the next pod.
func (p *podWatch) waitReady(ctx context.Context, name string, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-p.w.ResultChan():
			if !ok {
				return time.Time{}, fmt.Errorf("pod watch closed before %s was Ready", name)
			}
			if pod, isPod := ev.Object.(*corev1.Pod); isPod && pod.Name == name && pod.DeletionTimestamp == nil && podReady(*pod) {
				return time.Now(), nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("%s not Ready after %s", name, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}
