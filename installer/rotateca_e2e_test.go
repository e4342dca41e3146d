package installer

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/internal/benchreport"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/pki"
)

// TestCARotationE2E: three masters and two workers running a Service
// backed by a pod on each worker have their three CAs replaced by `anvil
// cluster rotate-ca` while a writer creates objects through the VIP (its
// trust read from the workstation kubeconfig the rotation keeps current)
// and a reader asks the Service: no acknowledged write is lost, the
// longest gaps are reported, every machine trusts the new CA alone
// afterwards, the old admin kubeconfig is refused, every Node is Ready,
// the kubelets serve logs with certificates of the new CA, names resolve
// in pods, and a stage run again changes nothing.
//
// It is part of the day-two suite, make upgrade-test (its five minutes of
// rotation would push make test past its budget); make test runs its
// focused part: the stages on a PKI (TestRotateCA, TestRotateCAResumes),
// the bundles a node refuses (TestCheckBundle) and where a rotation
// resumes (TestResumeFrom).
func TestCARotationE2E(t *testing.T) {
	if os.Getenv(upgradeE2EEnv) == "" {
		t.Skipf("the CA rotation suite runs in make upgrade-test (%s=1)", upgradeE2EEnv)
	}
	labtest.Require(t)
	bin, kube := buildAnvil(t), kubeDirs(t)
	l := labtest.Start(t, labtest.Options{Masters: 3, Workers: 2})
	ctx := context.Background()
	file := l.ClusterFile
	kubeconfig := filepath.Join(t.TempDir(), "admin.conf")
	o, _ := options(t, file)
	if _, err := Apply(ctx, ApplyOptions{Options: o, Anvil: bin, KubeDirs: kube, Kubeconfig: kubeconfig, Timeout: 5 * time.Minute}); err != nil {
		o.Progress.Close()
		t.Fatal(err)
	}
	o.Progress.Close()
	cs := clientFor(t, kubeconfig)
	oldKubeconfig := filepath.Join(t.TempDir(), "old-admin.conf")
	if b, err := os.ReadFile(kubeconfig); err != nil || os.WriteFile(oldKubeconfig, b, 0o600) != nil {
		t.Fatal(err)
	}
	caHash := func(m string) string { return strings.TrimSpace(l.Run(t, m, anvilOnHost+" certs ca-hash")) }
	oldHash := caHash(l.Masters()[0].Name)

	url := serveTestapp(t, ctx, cs, l)
	token := writerToken(t, ctx, cs)
	wr := startWriterWith(ctx, writerConfig(kubeconfig, token))
	defer wr.stop()
	rd := startReader(url)
	defer rd.stop()

	var res *RotateCAResult
	t.Run("the three stages run on every host while a writer writes through the VIP", func(t *testing.T) {
		ro, logs := options(t, file)
		var err error
		res, err = RotateCA(ctx, RotateCAOptions{Options: ro, Kubeconfig: kubeconfig})
		ro.Progress.Close()
		if err != nil {
			t.Fatalf("rotate-ca: %v\n%s", err, logs)
		}
		for _, s := range res.Steps {
			if s.Change {
				t.Logf("%s %s: %s", s.Phase, s.Host, s.Do)
			}
		}
		t.Logf("CA rotation of 3 masters + 2 workers: %s", fmtDuration(res.Took))
	})

	t.Run("no acknowledged write is lost; the longest gaps", func(t *testing.T) {
		acked, failures, worstGap := wr.stop()
		w, err := writerConfig(kubeconfig, token)()
		if err != nil {
			t.Fatal(err)
		}
		r := &renewalLab{l: l, w: w}
		if lost := r.lost(t, acked); len(lost) > 0 {
			t.Errorf("%d acknowledged writes are gone: %v", len(lost), lost)
		}
		t.Logf("%d writes acknowledged, %d failed; longest gap between acknowledged writes through the VIP: %s", len(acked), failures, fmtDuration(worstGap))
		if worstGap > 15*time.Second {
			t.Errorf("writes through the VIP stopped for %s", worstGap)
		}
		answers, misses, serviceGap := rd.stop()
		t.Logf("the Service answered %d times, missed %d; longest gap between answers: %s", answers, misses, fmtDuration(serviceGap))
		if serviceGap > 15*time.Second {
			t.Errorf("the Service did not answer for %s", serviceGap)
		}
		t.Log(benchreport.Figure{Name: "longest write gap through the VIP during a CA rotation", Value: worstGap.Seconds(), Unit: "s", Anchor: 5, Note: "3 masters + 2 workers, three stages"})
	})

	t.Run("every machine trusts the new CA alone; the old admin kubeconfig is refused", func(t *testing.T) {
		newHash := caHash(l.Masters()[0].Name)
		if newHash == oldHash {
			t.Fatalf("the CA hash is still %s", oldHash)
		}
		for _, m := range l.Masters() {
			if h := caHash(m.Name); h != newHash {
				t.Errorf("%s: CA %s, want %s", m.Name, h, newHash)
			}
			for _, ca := range []string{"ca.crt", "etcd/ca.crt", "front-proxy-ca.crt"} {
				if n := strings.TrimSpace(l.Run(t, m.Name, "grep -c 'BEGIN CERTIFICATE' /etc/kubernetes/pki/"+ca)); n != "1" {
					t.Errorf("%s: %s holds %s certificates", m.Name, ca, n)
				}
			}
			if out := l.Run(t, m.Name, "ls /etc/kubernetes/pki/"); strings.Contains(out, "-next") {
				t.Errorf("%s: next CA files left behind: %s", m.Name, out)
			}
		}
		for _, h := range append(l.Masters(), l.Workers()...) {
			var why string
			ok := waitUntil(2*time.Minute, func() bool {
				why = kubeletTrustsNewCA(t, l, h.Name)
				return why == ""
			})
			if !ok {
				t.Errorf("%s: %s", h.Name, why)
			}
		}
		cm, err := clientFor(t, kubeconfig).CoreV1().ConfigMaps("kube-system").Get(ctx, "extension-apiserver-authentication", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"client-ca-file", "requestheader-client-ca-file"} {
			if certs, err := pki.ParseCerts([]byte(cm.Data[k])); err != nil || len(certs) != 1 {
				t.Errorf("extension-apiserver-authentication %s holds %d CAs (%v), want the new one alone", k, len(certs), err)
			}
		}
		old := clientFor(t, oldKubeconfig)
		if _, err := old.CoreV1().Namespaces().List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
			t.Error("the admin kubeconfig of the old CA still works")
		} else {
			t.Logf("the old admin kubeconfig: %v", err)
		}
	})

	t.Run("Nodes Ready, logs from a worker's kubelet, names resolve in pods", func(t *testing.T) {
		cs := clientFor(t, kubeconfig)
		waitFor(t, 2*time.Minute, "every Node to be Ready", func() bool {
			nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil || len(nodes.Items) != 5 {
				return false
			}
			for _, n := range nodes.Items {
				if !slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
					return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
				}) {
					return false
				}
			}
			return true
		})
		pods := waitTestappRunning(t, cs, 2, 2*time.Minute)
		var logErr error
		defer func() {
			if logErr != nil {
				t.Logf("the last logs request: %v", logErr)
			}
		}()
		waitFor(t, 2*time.Minute, "logs of "+pods[0].Name+" through its kubelet", func() bool {
			rc, err := cs.CoreV1().Pods(pods[0].Namespace).GetLogs(pods[0].Name, &corev1.PodLogOptions{}).Stream(ctx)
			if logErr = err; err != nil {
				return false
			}
			defer rc.Close()
			_, logErr = io.Copy(io.Discard, rc)
			return logErr == nil
		})
		// CoreDNS started again with the new bundle and still reads the API.
		kubectl := hostfsKubectl + " --kubeconfig /etc/kubernetes/admin.conf"
		l.Run(t, l.Masters()[0].Name, kubectl+" -n kube-system rollout status deployment/coredns --timeout 2m")
		out := l.Run(t, l.Masters()[0].Name, kubectl+" -n kube-system logs deployment/coredns --since 1m")
		if strings.Contains(out, "x509") {
			t.Errorf("CoreDNS fails TLS to the API:\n%s", out)
		}
	})

	t.Run("a stage run again changes nothing", func(t *testing.T) {
		for _, h := range []string{l.Masters()[1].Name, l.Workers()[0].Name} {
			var got struct {
				Restarted []string `json:"restarted"`
				Changed   []string `json:"changed"`
				NodeStack *struct {
					Restarted []string `json:"restarted"`
				} `json:"nodeStack"`
			}
			out := l.Run(t, h, anvilOnHost+" certs rotate-ca --stage "+pki.RotateDrop+" -o json")
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%s: %v\n%s", h, err, out)
			}
			if len(got.Restarted) > 0 || len(got.Changed) > 0 || got.NodeStack != nil && len(got.NodeStack.Restarted) > 0 {
				t.Errorf("%s: the drop stage again: %s", h, out)
			}
		}
	})
}

// kubeletTrustsNewCA says what is wrong with a machine's trust after a
// rotation: its ca.crt must hold one CA, and the kubelet's client and
// serving certificates must verify against it; "" when all is well.
func kubeletTrustsNewCA(t *testing.T, l *labtest.Lab, h string) string {
	cas, err := pki.ParseCerts([]byte(l.Run(t, h, "cat /etc/kubernetes/pki/ca.crt")))
	if err != nil || len(cas) != 1 {
		return fmt.Sprintf("/etc/kubernetes/pki/ca.crt holds %d CAs (%v), want the new one alone", len(cas), err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cas[0])
	for _, f := range []string{"kubelet-client-current.pem", "kubelet-server-current.pem"} {
		out, err := tryRun(t, l, h, "cat /var/lib/kubelet/pki/"+f)
		if err != nil {
			return f + ": " + err.Error()
		}
		certs, err := pki.ParseCerts([]byte(out))
		if err != nil {
			return f + ": " + err.Error()
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return f + " does not verify against the new CA: " + err.Error()
		}
	}
	return ""
}
