package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// TestCertRenewalE2E: three masters whose certificates last three
// minutes renew them by themselves, twice each (the renewal timer, anvil
// certs renew-due), one master at a time, while a writer creates objects
// through the VIP: no acknowledged write is lost, and the longest gap is
// reported.
func TestCertRenewalE2E(t *testing.T) {
	labtest.Require(t)
	bin, kube := buildAnvil(t), kubeDirs(t)
	l := labtest.Start(t, labtest.Options{Masters: 3})
	const validity = 3 * time.Minute
	file := rewrite(t, l, func(c *v1alpha1.Cluster) { c.PKI.CertValidity = v1alpha1.Duration{Duration: validity} })
	kubeconfig := filepath.Join(t.TempDir(), "admin.conf")
	ctx := context.Background()
	o, _ := options(t, file)
	_, err := Apply(ctx, ApplyOptions{Options: o, Anvil: bin, KubeDirs: kube, Kubeconfig: kubeconfig, Timeout: 5 * time.Minute})
	o.Progress.Close()
	if err != nil {
		t.Fatal(err)
	}
	ms := l.Masters()
	type check struct {
		pki.Expiration
		Renewals []master.Renewal `json:"renewals"`
	}
	checkOn := func(t *testing.T, m string) check {
		t.Helper()
		var c check
		out := l.Run(t, m, anvilOnHost+" certs check-expiration -o json")
		if err := json.Unmarshal([]byte(out), &c); err != nil {
			t.Fatalf("%s: check-expiration: %v\n%s", m, err, out)
		}
		return c
	}
	issued := map[string]time.Time{}
	for _, m := range ms {
		for _, e := range checkOn(t, m.Name).Certificates {
			if e.Name == "apiserver" {
				issued[m.Name] = e.Issued
				if got := e.Expires.Sub(e.Issued); got > validity+10*time.Minute {
					t.Fatalf("%s: apiserver certificate valid %s, want %s", m.Name, got, validity)
				}
			}
		}
		if st := l.Run(t, m.Name, "systemctl is-active "+master.RenewJobName+".timer"); st != "active" {
			t.Fatalf("%s: %s.timer is %s", m.Name, master.RenewJobName, st)
		}
	}

	// The writer's credential outlives the certificates: a service
	// account token, through the VIP.
	cs := clientFor(t, kubeconfig)
	w := writerClient(t, ctx, cs, kubeconfig)
	var (
		mu       sync.Mutex
		acked    []string
		lastOK   = time.Now()
		worstGap time.Duration
		failures int
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			name := fmt.Sprintf("w-%05d", i)
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := w.CoreV1().ConfigMaps(renewNS).Create(rctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			cancel()
			mu.Lock()
			if err == nil {
				acked = append(acked, name)
				worstGap = max(worstGap, time.Since(lastOK))
				lastOK = time.Now()
			} else {
				failures++
			}
			mu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()

	t.Run("every master renews its certificates twice, one master at a time", func(t *testing.T) {
		// Each falls due with a third of three minutes left; the timer
		// looks every 18 s; three masters take turns.
		const times = 2
		var renewals map[string][]master.Renewal
		waitFor(t, (times+1)*validity, "every master to renew its certificates twice", func() bool {
			renewals = map[string][]master.Renewal{}
			for _, m := range ms {
				c := checkOn(t, m.Name)
				for _, r := range c.Renewals {
					if r.Error != "" {
						t.Fatalf("%s: renewal at %s failed: %s\n%s", m.Name, r.Time, r.Error, l.Run(t, m.Name, "journalctl -u "+master.RenewJobName+".service --no-pager | tail -n 30"))
					}
				}
				renewals[m.Name] = c.Renewals
				if len(c.Renewals) < times {
					return false
				}
			}
			return true
		})
		var spans [][2]time.Time
		for _, m := range ms {
			for _, r := range renewals[m.Name] {
				t.Logf("%s: at %s renewed %d, restarted %v, in %s", m.Name, r.Time.Format(time.TimeOnly), len(r.Renewed), r.Restarted, fmtDuration(r.Finished.Sub(r.Time)))
				spans = append(spans, [2]time.Time{r.Time, r.Finished})
			}
			r := renewals[m.Name][0]
			for _, want := range []string{"apiserver", "etcd-peer", pki.ControllerManagerKubeconfig} {
				if !slices.Contains(r.Renewed, want) {
					t.Errorf("%s: renewed %v, without %s", m.Name, r.Renewed, want)
				}
			}
			for _, want := range []string{master.Etcd, master.APIServer, master.ControllerManager, master.Scheduler} {
				if !slices.Contains(r.Restarted, want) {
					t.Errorf("%s: restarted %v, without %s", m.Name, r.Restarted, want)
				}
			}
			for _, e := range checkOn(t, m.Name).Certificates {
				if e.Name == "apiserver" && !e.Issued.After(issued[m.Name]) {
					t.Errorf("%s: the apiserver certificate was issued %s, as before", m.Name, e.Issued)
				}
			}
		}
		slices.SortFunc(spans, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
		for i := 1; i < len(spans); i++ {
			if spans[i][0].Before(spans[i-1][1]) {
				t.Errorf("two masters renewed at once: %v", spans)
			}
		}
		out := l.Run(t, ms[0].Name, anvilOnHost+" certs check-expiration")
		t.Logf("check-expiration on %s:\n%s", ms[0].Name, out)
	})

	t.Run("no acknowledged write is lost; the longest gap", func(t *testing.T) {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		list, err := w.CoreV1().ConfigMaps(renewNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, c := range list.Items {
			have[c.Name] = true
		}
		for _, n := range acked {
			if !have[n] {
				t.Errorf("acknowledged write %s is gone", n)
			}
		}
		t.Logf("%d writes acknowledged, %d failed; longest gap between acknowledged writes through the VIP: %s (goal 5 s)", len(acked), failures, fmtDuration(worstGap))
		if worstGap > 15*time.Second {
			t.Errorf("writes through the VIP stopped for %s", worstGap)
		}
	})

	t.Run("every apiserver answers with its renewed certificate", func(t *testing.T) {
		nodesReady(t, freshKubeconfig(t, l, ms[0].Name), namesExcept(l))
	})
}

const renewNS = "renewal-writer"

// writerClient is a client through kubeconfig's server (the VIP) with a
// service account token of an hour, allowed to write ConfigMaps in
// renewNS.
func writerClient(t *testing.T, ctx context.Context, cs kubernetes.Interface, kubeconfig string) kubernetes.Interface {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: renewNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(renewNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "writer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings(renewNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "writer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "writer", Namespace: renewNS}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hour := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(renewNS).CreateToken(ctx, "writer", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	wcfg := &rest.Config{Host: cfg.Host, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData}, Timeout: 5 * time.Second}
	w, err := kubernetes.NewForConfig(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// freshKubeconfig is master m's admin.conf as it is now (renewed), on
// this machine.
func freshKubeconfig(t *testing.T, l *labtest.Lab, m string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.conf")
	data := l.Run(t, m, "cat /etc/kubernetes/admin.conf")
	if err := os.WriteFile(path, []byte(data+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
