package agent_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
)

// gracePeriod is the controller-manager's --node-monitor-grace-period in
// these tests: a silent node is marked Unknown after it (50 s by default).
const gracePeriod = 20 * time.Second

// TestWorkerE2E joins a worker from its own namespace to a real control
// plane and follows its Node through the faults the issue lists: a wrong
// token, CA hash or an impostor refused first, then the agent killed and
// restarted, the apiserver unreachable for a minute, the apiserver it was
// joined through gone for good, pods kept off a node without a container
// runtime unless they tolerate it.
func TestWorkerE2E(t *testing.T) {
	requireE2E(t)
	cp := mastertest.Start(t, mastertest.Options{ControllerManagerArgs: map[string]string{
		"node-monitor-grace-period": gracePeriod.String(),
		"node-monitor-period":       "2s",
	}})
	cs := cp.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tok := cp.Token(t, time.Hour)
	w := newWorker(t, cp, "w1")

	t.Run("bad input: clear error, nothing sent, nothing written", func(t *testing.T) {
		joinBadInput(t, ctx, cp, cs, tok)
	})

	t.Run("join from its own namespace", func(t *testing.T) {
		start := time.Now()
		out, err := w.join(ctx, cp, tok, cp.CAHash.String())
		if err != nil {
			t.Fatalf("anvil join: %v\n%s\nagent log:\n%s", err, out, w.agentLog())
		}
		t.Logf("joined in %s:\n%s", time.Since(start).Round(time.Millisecond), out)
		n, desc := nodeState(cs, w.Name)
		if n == nil || readyCondition(n).Status != corev1.ConditionTrue {
			t.Fatalf("node after join: %s", desc)
		}
		var internal []string
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = append(internal, a.Address)
			}
		}
		if len(internal) != 1 || internal[0] != w.NS.Addr.String() {
			t.Errorf("InternalIP %v, want the namespace's %s", internal, w.NS.Addr)
		}
		if !hasTaint(n, agent.NoRuntimeTaintKey) {
			t.Errorf("a node without a container runtime lacks %s: %s", agent.NoRuntimeTaintKey, desc)
		}
		if pods := n.Status.Allocatable[corev1.ResourcePods]; pods.Value() != agent.DefaultMaxPods {
			t.Errorf("allocatable pods %s, want %d", pods.String(), agent.DefaultMaxPods)
		}
		if n.Status.NodeInfo.BootID == "" || n.Status.NodeInfo.KernelVersion == "" || n.Status.NodeInfo.Architecture == "" {
			t.Errorf("node info incomplete: %+v", n.Status.NodeInfo)
		}
		if !strings.Contains(n.Annotations[agent.InterfacesAnnotation], `"eth0"`) {
			t.Errorf("interfaces annotation %q lacks eth0", n.Annotations[agent.InterfacesAnnotation])
		}
	})

	t.Run("lease renewed about every 10s", func(t *testing.T) {
		l, err := lease(cs, w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != w.Name || l.Spec.LeaseDurationSeconds == nil || *l.Spec.LeaseDurationSeconds != 40 {
			t.Fatalf("lease spec %+v", l.Spec)
		}
		if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Kind != "Node" {
			t.Errorf("lease owner %+v, want the Node", l.OwnerReferences)
		}
		var renewals []time.Time
		last := l.Spec.RenewTime.Time
		deadline := time.Now().Add(35 * time.Second)
		for len(renewals) < 3 && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			if l, err = lease(cs, w.Name); err != nil {
				t.Fatal(err)
			}
			if rt := l.Spec.RenewTime.Time; rt.After(last) {
				renewals, last = append(renewals, rt), rt
			}
		}
		if len(renewals) < 3 {
			t.Fatalf("only %d renewals in 35s", len(renewals))
		}
		for i := 1; i < len(renewals); i++ {
			gap := renewals[i].Sub(renewals[i-1])
			t.Logf("renewal gap %s", gap.Round(time.Millisecond))
			if gap < 9*time.Second || gap > 12*time.Second {
				t.Errorf("renewal gap %s, want about 10s", gap)
			}
		}
	})

	t.Run("metrics and health on the node's loopback only", func(t *testing.T) {
		base := "http://" + agent.DefaultMetricsAddress().String()
		health, err := w.get(ctx, base+"/healthz")
		if err != nil || !strings.Contains(health, `"registered":true`) || !strings.Contains(health, `"healthy":true`) {
			t.Errorf("/healthz: %v %s", err, health)
		}
		metrics, err := w.get(ctx, base+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{
			"anvil_agent_lease_renew_duration_seconds_count",
			"anvil_agent_lease_renew_failures_total",
			"anvil_agent_lease_last_renew_timestamp_seconds",
			"anvil_agent_client_certificate_expiration_timestamp_seconds",
			"process_resident_memory_bytes",
		} {
			if !strings.Contains(metrics, "\n"+m+" ") {
				t.Errorf("/metrics lacks %s", m)
			}
		}
		// Not on the node's own address: nothing outside the node sees it.
		addr := net.JoinHostPort(w.NS.Addr.String(), strconv.Itoa(agent.MetricsPort))
		if _, err := w.get(ctx, "http://"+addr+"/metrics"); err == nil {
			t.Errorf("the agent's metrics answer on %s", addr)
		}
	})

	t.Run("learned where every apiserver is", func(t *testing.T) {
		learned := filepath.Join(filepath.Dir(w.Root.Path(agent.KubeconfigFile)), agent.LearnedServersFile)
		waitFor(t, 30*time.Second, "the apiservers' addresses kept", func() (bool, string) {
			b, err := os.ReadFile(learned)
			return err == nil && strings.Contains(string(b), `"`+cp.URL+`"`), fmt.Sprintf("%s: %v", b, err)
		})
		if log := w.agentLog(); strings.Contains(log, "could not learn") {
			t.Errorf("the agent could not read the apiservers' Endpoints:\n%s", log)
		}
	})

	t.Run("token never written, never in argv or environment", func(t *testing.T) {
		secret := tok.Secret()
		if w.supervisorPID() == 0 || w.agentPID() == 0 {
			t.Fatalf("no supervisor or agent running under %s", w.Root)
		}
		if hits := grepTree(t, string(w.Root), secret); len(hits) > 0 {
			t.Errorf("the token's secret is in %v", hits)
		}
		if leaks := procLeaks([]int{w.supervisorPID(), w.agentPID()}, secret); len(leaks) > 0 {
			t.Errorf("the token's secret is in %v", leaks)
		}
		kc := w.Root.Path(agent.KubeconfigFile)
		fi, err := os.Stat(kc)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("kubeconfig %s: %v mode %v, want 0600", kc, err, fi.Mode().Perm())
		}
	})

	t.Run("runtime-less node gets pods only with a toleration", func(t *testing.T) {
		deployRuntimeless(t, ctx, cs, w.Name)
	})

	t.Run("client certificate renewed through a CSR", func(t *testing.T) {
		cfg, err := agent.LoadConfig(w.Root.Path(agent.ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		before, err := agent.ReadKubeconfig(cfg.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(cfg, agent.Options{})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := a.RotateCertificate(rctx); err != nil {
			t.Fatalf("rotate: %v", err)
		}
		after, err := agent.ReadKubeconfig(cfg.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if string(after.CertPEM) == string(before.CertPEM) || string(after.KeyPEM) == string(before.KeyPEM) {
			t.Fatal("kubeconfig still holds the old certificate or key")
		}
	})

	t.Run("agent killed: Unknown and unreachable; restarted: Ready", func(t *testing.T) {
		// Kill the supervisor first, so nothing restarts the agent.
		supervisorPID, agentPID := w.supervisorPID(), w.agentPID()
		killPID(t, supervisorPID, syscall.SIGKILL)
		killPID(t, agentPID, syscall.SIGKILL)
		took := waitFor(t, gracePeriod+30*time.Second, "node Unknown and tainted unreachable", func() (bool, string) {
			n, desc := nodeState(cs, w.Name)
			return n != nil && readyCondition(n).Status == corev1.ConditionUnknown && hasTaint(n, corev1.TaintNodeUnreachable), desc
		})
		t.Logf("Unknown + unreachable %s after the kill (grace period %s)", took.Round(time.Second), gracePeriod)
		// Restart: join again is a no-op for the credentials and starts
		// the supervisor and agent.
		out, err := w.join(ctx, cp, tok, cp.CAHash.String())
		if err != nil {
			t.Fatalf("anvil join again: %v\n%s", err, out)
		}
		if !strings.Contains(out, "already joined") {
			t.Errorf("second join did not keep the credentials:\n%s", out)
		}
		took = waitFor(t, 30*time.Second, "node Ready and untainted", func() (bool, string) {
			n, desc := nodeState(cs, w.Name)
			return n != nil && readyCondition(n).Status == corev1.ConditionTrue && !hasTaint(n, corev1.TaintNodeUnreachable), desc
		})
		t.Logf("Ready again %s after the restart", took.Round(time.Millisecond))
	})

	t.Run("apiserver unreachable for a minute: Ready again without a restart", func(t *testing.T) {
		pid := w.agentPID()
		if pid == 0 {
			t.Fatal("no agent runs")
		}
		if err := w.NS.SetLink(false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		n, desc := nodeState(cs, w.Name)
		if n == nil || readyCondition(n).Status != corev1.ConditionUnknown {
			t.Errorf("after a minute cut off: %s, want Unknown", desc)
		}
		if err := w.NS.SetLink(true); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, 30*time.Second, "node Ready after the link came back", func() (bool, string) {
			n, desc := nodeState(cs, w.Name)
			return n != nil && readyCondition(n).Status == corev1.ConditionTrue, desc
		})
		t.Logf("Ready %s after the link came back", took.Round(time.Millisecond))
		if took > 12*time.Second {
			t.Errorf("Ready %s after the apiserver came back, want within one interval (10s)", took)
		}
		if got := w.agentPID(); got != pid {
			t.Errorf("the agent restarted (pid %d → %d)", pid, got)
		}
	})

	t.Run("its apiserver address gone: fails over to a learned one", func(t *testing.T) {
		// As if the master the worker joined through were gone for good:
		// its configuration names only a port nothing listens on. The
		// agent, stopped with SIGTERM and started again by its
		// supervisor, must find the apiserver it learned.
		cfgFile := w.Root.Path(agent.ConfigFile)
		cfg, err := agent.LoadConfig(cfgFile)
		if err != nil {
			t.Fatal(err)
		}
		dead := "https://" + net.JoinHostPort(cp.NS.Addr.String(), "1")
		cfg.Servers = []string{dead}
		if _, err := agent.WriteConfig(cfgFile, cfg); err != nil {
			t.Fatal(err)
		}
		pid := w.agentPID()
		const clean = "exited with status 0" // the supervisor's note in the log
		cleanExits := strings.Count(w.agentLog(), clean)
		killPID(t, pid, syscall.SIGTERM)
		waitFor(t, 30*time.Second, "the agent stopped cleanly and started again", func() (bool, string) {
			now := w.agentPID()
			return now != 0 && now != pid && strings.Count(w.agentLog(), clean) > cleanExits, fmt.Sprintf("pid %d", now)
		})
		restarted := time.Now()
		took := waitFor(t, 30*time.Second, "the lease renewed after the restart", func() (bool, string) {
			l, err := lease(cs, w.Name)
			return err == nil && l.Spec.RenewTime.After(restarted), fmt.Sprint(err)
		})
		t.Logf("lease renewed %s after the restart", took.Round(time.Millisecond))
		health, err := w.get(ctx, "http://"+agent.DefaultMetricsAddress().String()+"/healthz")
		if err != nil || !strings.Contains(health, `"server":"`+cp.URL+`"`) {
			t.Errorf("/healthz: %v %s, want it on %s", err, health, cp.URL)
		}
		if n, desc := nodeState(cs, w.Name); n == nil || readyCondition(n).Status != corev1.ConditionTrue {
			t.Errorf("node: %s", desc)
		}
	})
}

// deployRuntimeless checks that a Deployment's pods stay Pending because
// of the no-runtime taint, and are bound to the node once they tolerate it.
func deployRuntimeless(t *testing.T, ctx context.Context, cs kubernetes.Interface, node string) {
	t.Helper()
	// Once Ready, the node lifecycle controller lifts the not-ready taint
	// the admission plugin put on the new Node; the no-runtime one stays.
	waitFor(t, 30*time.Second, "only the no-runtime taint", func() (bool, string) {
		n, desc := nodeState(cs, node)
		return n != nil && len(n.Spec.Taints) == 1 && n.Spec.Taints[0].Key == agent.NoRuntimeTaintKey, desc
	})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "runtimeless"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The namespace's default ServiceAccount comes from the controller-manager.
	waitFor(t, 30*time.Second, "default service account", func() (bool, string) {
		_, err := cs.CoreV1().ServiceAccounts("runtimeless").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	replicas := int32(2)
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "runtimeless"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			// Nothing will ever run these pods, so a rolling update would
			// wait for ever for the new ones to become available.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("runtimeless").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := func() []corev1.Pod {
		l, err := cs.CoreV1().Pods("runtimeless").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	// Without a toleration: the scheduler tries, and says why not.
	waitFor(t, 60*time.Second, "pods unschedulable because of the taint", func() (bool, string) {
		ps := pods()
		n := 0
		for _, p := range ps {
			for _, c := range p.Status.Conditions {
				// The scheduler says "untolerated taint(s)"; the node's only
				// taint is the no-runtime one (checked after join).
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable && strings.Contains(c.Message, "untolerated taint") {
					n++
				}
			}
			if p.Spec.NodeName != "" {
				t.Fatalf("pod %s was bound to %s despite the taint", p.Name, p.Spec.NodeName)
			}
		}
		var conds []string
		for _, p := range ps {
			for _, c := range p.Status.Conditions {
				conds = append(conds, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
			}
		}
		return len(ps) == 2 && n == 2, fmt.Sprintf("%d pods, %d unschedulable for the taint: %v", len(ps), n, conds)
	})
	// With one: bound to the node.
	patch := []byte(`{"spec":{"template":{"spec":{"tolerations":[{"key":"` + agent.NoRuntimeTaintKey + `","operator":"Exists","effect":"NoSchedule"}]}}}}`)
	if _, err := cs.AppsV1().Deployments("runtimeless").Patch(ctx, "web", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "tolerating pods bound to the node", func() (bool, string) {
		bound := 0
		var where []string
		for _, p := range pods() {
			if p.Spec.NodeName == node && len(p.Spec.Tolerations) > 0 && p.DeletionTimestamp == nil {
				bound++
			}
			where = append(where, p.Name+"→"+p.Spec.NodeName)
		}
		return bound == 2, fmt.Sprint(where)
	})
	// Nothing runs them: remove them without waiting for a kubelet.
	if err := cs.AppsV1().Deployments("runtimeless").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	if err := cs.CoreV1().Pods("runtimeless").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
}

// joinBadInput runs `anvil join` with what an operator gets wrong
// against a real control plane, and with an impostor in the middle: each
// fails with a message that says what is wrong, writes nothing, and the
// impostor never sees a credential. (A subtest of TestWorkerE2E, whose
// control plane it shares: starting one costs half a minute of the
// package's CI budget.)
func joinBadInput(t *testing.T, ctx context.Context, cp *mastertest.ControlPlane, cs kubernetes.Interface, good pki.Token) {

	// An expired token, as the tokencleaner would find it.
	expired := mustParseToken(t, "exp123.0123456789abcdef")
	if _, err := cs.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + expired.ID(), Namespace: "kube-system"},
		Type:       corev1.SecretType("bootstrap.kubernetes.io/token"),
		StringData: map[string]string{
			"token-id": expired.ID(), "token-secret": expired.Secret(),
			"expiration":                     time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
			"usage-bootstrap-signing":        "true",
			"usage-bootstrap-authentication": "true",
			"auth-extra-groups":              "system:bootstrappers:kubeadm:default-node-token",
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wrongSecret := mustParseToken(t, good.ID()+".ffffffffffffffff")
	otherHash := "sha256:" + strings.Repeat("ab", 32)

	imp := newRelayImpostor(t, cp)

	tests := []struct {
		name     string
		endpoint string
		tok      pki.Token
		hash     string
		want     string
	}{
		{"wrong token secret", cp.URL, wrongSecret, cp.CAHash.String(), "secret is wrong"},
		{"expired token", cp.URL, expired, cp.CAHash.String(), "expired"},
		{"wrong CA hash", cp.URL, good, otherHash, "does not match --ca-cert-hash"},
		{"impostor relaying the real cluster-info", imp.URL, good, cp.CAHash.String(), "not issued by the pinned cluster CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			cmd := exec.CommandContext(ctx, cp.Anvil, "join", tt.endpoint, "--token-file", "-", "--ca-cert-hash", tt.hash,
				"--node-name", "bad", "--layout", "process", "--root", root, "--timeout", "30s")
			cmd.Stdin = strings.NewReader(tt.tok.Reveal() + "\n")
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("join succeeded:\n%s", out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("join said:\n%s\nwant it to say %q", out, tt.want)
			}
			if strings.Contains(string(out), tt.tok.Secret()) {
				t.Errorf("join printed the token's secret:\n%s", out)
			}
			if entries, _ := os.ReadDir(root); len(entries) > 0 {
				t.Errorf("a failed join wrote %v", entries)
			}
			t.Logf("%s", out)
		})
	}
	for _, r := range imp.requests() {
		if r.Authorization != "" || r.ClientCert || r.Path != "/api/v1/namespaces/kube-public/configmaps/cluster-info" {
			t.Errorf("the impostor saw %s %s (Authorization %q, client certificate %v)", r.Method, r.Path, r.Authorization, r.ClientCert)
		}
	}
	if len(imp.requests()) == 0 {
		t.Error("the impostor was never asked")
	}
}
