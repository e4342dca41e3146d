package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/benchreport"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/master"
)

// upgradeE2EEnv opts in to the cross-version upgrade suite, which needs
// the previous release built as well (make upgrade-test builds it and
// sets this).
const upgradeE2EEnv = "ANVIL_UPGRADE_E2E"

// TestUpgradeE2E: three masters and two workers made with the previous
// release: an upgrade that stops half-way (a new scheduler that cannot
// start on the second master) is rolled back on every host; then they are
// upgraded by `anvil cluster apply` with the file's
// kubernetesVersion moved one minor up, while a writer creates objects
// through the VIP and a reader asks a Service backed by a pod on each
// worker (a PodDisruptionBudget keeps one): every acknowledged write is
// there afterwards, the longest write and Service gaps are reported, every
// apiserver, kubelet and etcd member agrees, a second apply changes
// nothing, a downgrade is refused without --rollback and done with it.
func TestUpgradeE2E(t *testing.T) {
	if os.Getenv(upgradeE2EEnv) == "" {
		t.Skipf("the cross-version upgrade suite runs in make upgrade-test (%s=1), which builds the previous release", upgradeE2EEnv)
	}
	rels := images.Releases()
	from, to := rels[len(rels)-1].Version, images.DefaultVersion
	labtest.Require(t)
	bin, kube := buildAnvil(t), kubeDirs(t)
	if _, err := images.ReadManifest(filepath.Join(kube[0], from)); err != nil {
		t.Fatalf("no build of Kubernetes %s in %s (make upgrade-test builds it): %v", from, kube[0], err)
	}
	l := labtest.Start(t, labtest.Options{Masters: 3, Workers: 2})
	ctx := context.Background()
	kubeconfig := filepath.Join(t.TempDir(), "admin.conf")
	apply := func(t *testing.T, version string, rollback bool) (*ApplyResult, error) {
		t.Helper()
		file := rewrite(t, l, func(c *v1alpha1.Cluster) { c.KubernetesVersion = version })
		o, _ := options(t, file)
		res, err := Apply(ctx, ApplyOptions{Options: o, Anvil: bin, KubeDirs: kube, Kubeconfig: kubeconfig, Timeout: 5 * time.Minute, Rollback: rollback})
		o.Progress.Close()
		return res, err
	}
	start := time.Now()
	if _, err := apply(t, from, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("3 masters at Kubernetes %s in %s", from, fmtDuration(time.Since(start)))
	checkVersions(t, l, kubeconfig, from)
	cs := clientFor(t, kubeconfig)

	t.Run("an upgrade that stops half-way is rolled back on every host", func(t *testing.T) {
		// The second master's new scheduler cannot start: the first master
		// is upgraded, the second half-way, the third not reached.
		m := l.Masters()
		const dropIn = "/etc/systemd/system/kube-scheduler.service.d/fault.conf"
		l.Run(t, m[1].Name, "mkdir -p "+filepath.Dir(dropIn)+" && printf '[Service]\\nExecStartPre=/bin/sh -c \\047! grep -q /opt/anvil/bin/"+to+"/ /etc/systemd/system/kube-scheduler.service\\047\\n' > "+dropIn+" && systemctl daemon-reload")
		defer l.Run(t, m[1].Name, "rm -f "+dropIn+" && systemctl daemon-reload")
		_, err := apply(t, to, false)
		var he *HostError
		if !errors.As(err, &he) || he.Host != m[1].Name || he.Phase != "upgrade" {
			t.Fatalf("apply with a scheduler that cannot start on %s: %v, want it to stop there", m[1].Name, err)
		}
		t.Logf("stopped: %v", err)
		states := map[string]master.NodeState{}
		for _, h := range m {
			var st master.NodeState
			if err := json.Unmarshal([]byte(l.Run(t, h.Name, "cat "+master.NodeStateFile)), &st); err != nil {
				t.Fatal(err)
			}
			states[h.Name] = st
		}
		if st := states[m[0].Name]; st.KubernetesVersion != to || st.UpgradingTo != "" {
			t.Errorf("%s: %+v, want %s finished", m[0].Name, st, to)
		}
		if st := states[m[1].Name]; st.KubernetesVersion != from || st.UpgradingTo != to {
			t.Errorf("%s: %+v, want an unfinished switch from %s to %s", m[1].Name, st, from, to)
		}
		if st := states[m[2].Name]; st.KubernetesVersion != from || st.UpgradingTo != "" {
			t.Errorf("%s: %+v, want %s untouched", m[2].Name, st, from)
		}
		for _, w := range l.Workers() {
			if out := l.Run(t, w.Name, "cat /etc/anvil/node-stack.json"); !strings.Contains(out, `"kubernetesVersion": "`+from+`"`) || strings.Contains(out, "upgradingTo") {
				t.Errorf("%s was touched while a master was behind: %s", w.Name, out)
			}
		}
		start := time.Now()
		if _, err := apply(t, from, true); err != nil {
			t.Fatal(err)
		}
		t.Logf("rolled back in %s", fmtDuration(time.Since(start)))
		checkVersions(t, l, kubeconfig, from)
		checkEtcd(t, l)
	})

	url := serveTestapp(t, ctx, cs, l)
	r := &renewalLab{l: l, ms: l.Masters(), w: writerClient(t, ctx, cs, kubeconfig)}
	wr := startWriter(ctx, r.w)
	defer wr.stop()
	rd := startReader(url)
	defer rd.stop()

	t.Run("the masters are upgraded one at a time while a writer writes through the VIP", func(t *testing.T) {
		start := time.Now()
		res, err := apply(t, to, false)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		var upgraded []string
		for _, s := range res.Plan {
			if s.Phase == "upgrade" && s.Change {
				upgraded = append(upgraded, s.Host+": "+s.Do)
			}
		}
		for _, s := range res.Plan {
			if s.Phase == "upgrade-workers" && s.Change {
				upgraded = append(upgraded, s.Host+": "+s.Do)
			}
		}
		if len(upgraded) != 5 {
			t.Errorf("the upgrade phases did %v, want the 3 masters and the 2 workers", upgraded)
		}
		t.Logf("apply with kubernetesVersion %s: %s\n  %s", to, fmtDuration(took), strings.Join(upgraded, "\n  "))
		acked, failures, worstGap := wr.stop()
		if lost := r.lost(t, acked); len(lost) > 0 {
			t.Errorf("%d acknowledged writes are gone: %v", len(lost), lost)
		}
		t.Logf("%d writes acknowledged, %d failed; longest gap between acknowledged writes through the VIP: %s (goal 5 s)", len(acked), failures, fmtDuration(worstGap))
		if worstGap > 15*time.Second {
			t.Errorf("writes through the VIP stopped for %s", worstGap)
		}
		answers, misses, serviceGap := rd.stop()
		t.Logf("the Service answered %d times, missed %d; longest gap between answers: %s", answers, misses, fmtDuration(serviceGap))
		if serviceGap > 15*time.Second {
			t.Errorf("the Service did not answer for %s", serviceGap)
		}
		t.Log(benchreport.Figure{Name: "longest Service gap during the upgrade", Value: serviceGap.Seconds(), Unit: "s", Anchor: 5, Note: "a pod on each worker, a PodDisruptionBudget of 1"})
		t.Log(benchreport.Figure{Name: "upgrade of 3 masters + 2 workers " + from + " → " + to, Value: took.Seconds(), Unit: "s", Anchor: 180, Note: "issue 17: whole cluster ≤ 3 min"})
		t.Log(benchreport.Figure{Name: "longest write gap through the VIP during the upgrade", Value: worstGap.Seconds(), Unit: "s", Anchor: 5, Note: "issue 17: ≤ 5 s"})
		checkVersions(t, l, kubeconfig, to)
		checkEtcd(t, l)
	})

	t.Run("a second apply changes nothing", func(t *testing.T) {
		// What each host's anvil daemons run, told if the apply plans a
		// restart of them.
		var daemons []string
		for _, h := range l.Hosts {
			daemons = append(daemons, h.Name+":\n"+l.Run(t, h.Name, `readlink -f /usr/local/bin/anvil; for u in anvil-etcd anvil-approver anvil-vip anvil-agent; do p=$(systemctl show -p MainPID --value $u.service); [ "${p:-0}" -gt 0 ] && echo "$u $p $(readlink /proc/$p/exe) since $(systemctl show -p ActiveEnterTimestamp --value $u.service)"; done; true`))
		}
		res, err := apply(t, to, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range res.Plan {
			if (s.Phase == "upgrade" || s.Phase == "upgrade-workers") && s.Change {
				t.Errorf("upgrade again on %s: %s", s.Host, s.Do)
			}
		}
		if t.Failed() {
			t.Logf("anvil's daemons before the apply:\n%s", strings.Join(daemons, "\n"))
		}
	})

	t.Run("a downgrade is refused without --rollback, and done with it", func(t *testing.T) {
		_, err := apply(t, from, false)
		var he *HostError
		if !errors.As(err, &he) || !strings.Contains(err.Error(), "downgrade across minors") {
			t.Fatalf("apply of %s over %s: %v, want a refusal naming the downgrade", from, to, err)
		}
		checkVersions(t, l, kubeconfig, to)
		if _, err := apply(t, from, true); err != nil {
			t.Fatal(err)
		}
		checkVersions(t, l, kubeconfig, from)
		checkEtcd(t, l)
	})
}

// checkVersions checks that every master's node state, apiserver and
// kubelet report version.
func checkVersions(t *testing.T, l *labtest.Lab, kubeconfig, version string) {
	t.Helper()
	cs := clientFor(t, kubeconfig)
	for _, m := range l.Masters() {
		var st master.Status
		if err := json.Unmarshal([]byte(l.Run(t, m.Name, anvilOnHost+" status -o json")), &st); err != nil {
			t.Fatalf("%s: anvil status: %v", m.Name, err)
		}
		if st.KubernetesVersion != version {
			t.Errorf("%s: node state says %s, want %s", m.Name, st.KubernetesVersion, version)
		}
		out := l.Run(t, m.Name, hostfsKubectl+" --kubeconfig /etc/kubernetes/admin.conf --server https://"+m.Address.String()+":6443 version -o json")
		var v struct {
			Server struct {
				GitVersion string `json:"gitVersion"`
			} `json:"serverVersion"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil || v.Server.GitVersion != version {
			t.Errorf("%s: apiserver %q (%v), want %s", m.Name, v.Server.GitVersion, err, version)
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if got := n.Status.NodeInfo.KubeletVersion; got != version {
			t.Errorf("Node %s: kubelet %s, want %s", n.Name, got, version)
		}
	}
}

// checkEtcd runs anvil etcd check on the first master: every member
// holds the same data.
func checkEtcd(t *testing.T, l *labtest.Lab) {
	t.Helper()
	out := l.Run(t, l.Masters()[0].Name, anvilOnHost+" etcd check -o json")
	var rep struct {
		Consistent bool `json:"consistent"`
		Members    []struct {
			Name string `json:"name"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Consistent || len(rep.Members) != len(l.Masters()) {
		t.Errorf("anvil etcd check: %s (%v)", out, err)
	}
}

const hostfsKubectl = "/usr/local/bin/kubectl"

// serveTestapp runs the test image on both workers, one pod each, with a
// PodDisruptionBudget that keeps one, behind a NodePort; it returns the
// NodePort's URL on the first master.
func serveTestapp(t *testing.T, ctx context.Context, cs kubernetes.Interface, l *labtest.Lab) string {
	t.Helper()
	kube := kubeDirs(t)
	if err := createTestapp(ctx, cs, testappImage(t, kube[0]), 2); err != nil {
		t.Fatal(err)
	}
	waitTestappRunning(t, cs, 2, 3*time.Minute)
	one := intstr.FromInt32(1)
	if _, err := cs.PolicyV1().PodDisruptionBudgets(testappNamespace).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "testapp"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "testapp"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
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
	u := "http://" + net.JoinHostPort(l.Masters()[0].Address.String(), strconv.Itoa(int(svc.Spec.Ports[0].NodePort))) + "/"
	waitFor(t, time.Minute, "the NodePort "+u+" to answer", func() bool {
		_, err := httpGet(u)
		return err == nil
	})
	return u
}

// reader asks a URL every 200 ms and keeps the longest gap between
// answers.
type reader struct {
	quit, done      chan struct{}
	answers, misses int
	worst           time.Duration
}

func startReader(url string) *reader {
	r := &reader{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		last := time.Now()
		for {
			select {
			case <-r.quit:
				r.worst = max(r.worst, time.Since(last))
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := httpGet(url); err != nil {
				r.misses++
				continue
			}
			r.answers++
			r.worst = max(r.worst, time.Since(last))
			last = time.Now()
		}
	}()
	return r
}

// stop ends the reader (once; later calls return the same) and returns
// its counts and the longest gap.
func (r *reader) stop() (answers, misses int, worst time.Duration) {
	select {
	case <-r.quit:
	default:
		close(r.quit)
	}
	<-r.done
	return r.answers, r.misses, r.worst
}

// BenchmarkUpgrade: issue 17's upgrade figures: the whole upgrade of 3
// masters and 2 workers by cluster apply, and the longest gap between
// acknowledged writes through the VIP meanwhile (make bench; it needs the
// previous release, as make upgrade-test does).
func BenchmarkUpgrade(b *testing.B) {
	if os.Getenv(upgradeE2EEnv) == "" {
		b.Skipf("needs the previous release built: %s=1 (make bench sets it)", upgradeE2EEnv)
	}
	rels := images.Releases()
	from, to := rels[len(rels)-1].Version, images.DefaultVersion
	labtest.Require(b)
	bin, kube := buildAnvil(b), kubeDirs(b)
	l := labtest.Start(b, labtest.Options{Masters: 3, Workers: 2})
	ctx := context.Background()
	kubeconfig := filepath.Join(b.TempDir(), "admin.conf")
	apply := func(version string) {
		file := rewrite(b, l, func(c *v1alpha1.Cluster) { c.KubernetesVersion = version })
		o, _ := options(b, file)
		_, err := Apply(ctx, ApplyOptions{Options: o, Anvil: bin, KubeDirs: kube, Kubeconfig: kubeconfig, Timeout: 5 * time.Minute})
		o.Progress.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	apply(from)
	r := &renewalLab{l: l, ms: l.Masters(), w: writerClient(b, ctx, clientFor(b, kubeconfig), kubeconfig)}
	wr := startWriter(ctx, r.w)
	start := time.Now()
	apply(to)
	took := time.Since(start)
	acked, failures, gap := wr.stop()
	if lost := r.lost(b, acked); len(lost) > 0 {
		b.Errorf("%d acknowledged writes are gone", len(lost))
	}
	benchreport.Report(b, benchreport.Figure{
		Name: "whole-cluster upgrade (3 masters + 2 workers)", Value: took.Seconds(), Unit: "s", Anchor: 180,
		Note: fmt.Sprintf("issue 17: ≤ 3 min; %s → %s by cluster apply", from, to),
	})
	benchreport.Report(b, benchreport.Figure{
		Name: "longest write gap through the VIP during an upgrade", Value: gap.Seconds(), Unit: "s", Anchor: 5,
		Note: fmt.Sprintf("issue 17: ≤ 5 s, kubeadm: a node at a time by hand; %d writes acknowledged, %d failed, none lost", len(acked), failures),
	})
}
