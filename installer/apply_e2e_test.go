package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"anvil.dev/anvil/addons"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/lab/labtest"
	"anvil.dev/anvil/master"
)

// clusterE2E provisions the lab with `cluster apply` (systemd layout, as
// user debian through sudo) and checks what the issue asks: every Node
// Ready, three etcd members, every apiserver reachable; a second apply
// that uploads nothing and changes nothing; hosts added to the file joined
// alone, with their SSH sessions killed in the middle of their joins (a
// master's after its etcd member was added), and a re-run that converges
// with no duplicate etcd member; nothing failing the CIS benchmark on the
// first master; no secret in any process list, sudo log or output, and no
// bootstrap credential left once the joins are over; status, also with a
// host cut off; a replaced host key refused; and a reset that leaves the
// machines clean.
func clusterE2E(t *testing.T, e *e2e) {
	l, bin, kube := e.l, e.bin, e.kube
	requireControlPlaneJoin(t, bin)
	masters, workers := l.Masters(), l.Workers()
	m1, m3, w1, w2 := masters[0], masters[2], workers[0], workers[1]
	// The whole lab, reached as debian with sudo; and the same without m3
	// and w2, which join later.
	full := rewrite(t, l, func(c *v1alpha1.Cluster) { c.SSH.User = "debian" })
	first := rewrite(t, l, func(c *v1alpha1.Cluster) {
		c.SSH.User = "debian"
		withoutHosts(m3.Name, w2.Name)(c)
	})
	kubeconfig := DefaultKubeconfigPath(full)

	var mu sync.Mutex
	var secrets []string // every secret an apply handled
	applyWith := func(t *testing.T, o Options, anvil string) (*ApplyResult, error) {
		t.Helper()
		res, err := Apply(context.Background(), ApplyOptions{
			Options: o, Anvil: anvil, KubeDirs: kube, CacheDir: e.cache, Kubeconfig: kubeconfig, Timeout: 5 * time.Minute,
			secretSeen: func(s string) {
				mu.Lock()
				defer mu.Unlock()
				secrets = append(secrets, s)
			},
		})
		o.Progress.Close()
		return res, err
	}
	apply := func(t *testing.T, o Options) (*ApplyResult, error) {
		t.Helper()
		return applyWith(t, o, bin)
	}
	var seen []string // every process list, sudo log and output, for the secrets check
	watch := func(t *testing.T) (stop func()) {
		var stops []func() string
		for _, h := range l.Hosts {
			stops = append(stops, watchProcesses(t, l, h.Name))
		}
		return func() {
			for _, s := range stops {
				seen = append(seen, s())
			}
		}
	}

	t.Run("apply 2 masters + 1 worker", func(t *testing.T) {
		stop := watch(t)
		o, out := options(t, first)
		res, err := apply(t, o)
		stop()
		seen = append(seen, out.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("first apply: %s, uploaded %s", fmtDuration(res.Elapsed), human.Bytes(res.BytesUploaded))
		if fi, err := os.Stat(kubeconfig); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("kubeconfig %s: %v %v", kubeconfig, fi, err)
		}
		nodesReady(t, kubeconfig, namesExcept(l, m3.Name, w2.Name))
		etcdMembers(t, l, m1.Name, namesExcept(l, m3.Name, w1.Name, w2.Name))
		if len(res.DeletedTokens) == 0 {
			t.Error("the apply deleted no join token")
		}
	})
	if t.Failed() {
		return
	}

	t.Run("a second apply changes nothing", func(t *testing.T) {
		o, _ := options(t, first)
		res, err := apply(t, o)
		if err != nil {
			t.Fatal(err)
		}
		if res.BytesUploaded != 0 {
			t.Errorf("uploaded %d bytes", res.BytesUploaded)
		}
		for _, s := range res.Plan {
			if s.Change {
				t.Errorf("a second apply changes something: %+v", s)
			}
		}
		t.Logf("second apply: %s (BenchmarkApply measures it against its anchor, 3 s)", fmtDuration(res.Elapsed))

		// The same through the command, as a person runs it: plain
		// progress lines and the summary table on stderr.
		stdout, stderr, err := runAnvil(t, bin, "cluster", "apply", "-f", first, "--kube-dir", kube[0], "--kubeconfig", kubeconfig)
		if err != nil {
			t.Fatalf("anvil cluster apply: %v\n%s", err, stderr)
		}
		for _, want := range []string{"HOST", "CONNECT", "UPLOAD", "RESULT", "nothing to upload", "uploaded 0 B"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("anvil cluster apply's progress lacks %q:\n%s", want, stderr)
			}
		}
		if !strings.Contains(stdout, "kubectl --kubeconfig "+kubeconfig+" get nodes -o wide") {
			t.Errorf("anvil cluster apply's output:\n%s", stdout)
		}
	})

	t.Run("two hosts added, their SSH sessions killed mid-join, then a re-run", func(t *testing.T) {
		stop := watch(t)
		o, out := options(t, full)
		// The master's session dies once its etcd member exists (the
		// join is past etcd-member), the worker's once it started.
		killers := map[string]*regexp.Regexp{
			m3.Name: joinPhaseRE(m3.Name, "anvil join --control-plane", "config"),
			w2.Name: joinPhaseRE(w2.Name, "anvil join", "tls-bootstrap"),
		}
		killed := make(chan string, len(killers))
		for host, re := range killers {
			go func() {
				killed <- killSessionDuringJoin(t, l, host, func() bool { return re.MatchString(out.String()) })
			}()
		}
		res, err := apply(t, o)
		stop()
		seen = append(seen, out.String())
		for range killers {
			what := <-killed
			if what == "" {
				t.Fatalf("a join was never cut (apply: %v)", err)
			}
			t.Logf("killed %s", what)
		}
		for _, h := range []string{m3.Name, w2.Name} {
			if he := hostErr(err, h); he == nil {
				t.Errorf("apply with a dead session: err = %v, want %s failing", err, h)
			}
		}
		onlyAdded := func(res *ApplyResult) {
			t.Helper()
			for _, s := range res.Plan {
				// Besides the joins: their credentials, and the add-ons
				// applied again to spread CoreDNS over the new nodes.
				if s.Change && s.Host != m3.Name && s.Host != w2.Name && !madeOrDeletedCredentials(s) && s.Phase != "addons" {
					t.Errorf("adding %s and %s changed another host: %+v", m3.Name, w2.Name, s)
				}
			}
		}
		onlyAdded(res)

		stop = watch(t)
		o, out = options(t, full)
		res, err = apply(t, o)
		stop()
		seen = append(seen, out.String())
		if err != nil {
			t.Fatalf("re-run: %v", err)
		}
		onlyAdded(res)
	})

	t.Run("5 Nodes Ready, 3 etcd members, every apiserver ready", func(t *testing.T) {
		nodesReady(t, kubeconfig, namesExcept(l))
		etcdMembers(t, l, m1.Name, namesExcept(l, w1.Name, w2.Name))
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range masters {
			c := rest.CopyConfig(cfg)
			c.Host = "https://" + m.Address.String() + ":6443"
			cs, err := kubernetes.NewForConfig(c)
			if err != nil {
				t.Fatal(err)
			}
			body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
			if err != nil || string(body) != "ok" {
				t.Errorf("%s: /readyz from the workstation: %q, %v", m.Name, body, err)
			}
		}
	})

	t.Run("workloads", func(t *testing.T) { workloadsE2E(t, e, kubeconfig) })

	t.Run("conformance: the focused part of the upstream suite passes", func(t *testing.T) { conformanceE2E(t, e, kubeconfig, apply) })

	t.Run("a new anvil build: the apply uploads it and restarts anvil's daemons on every host, masters one at a time, no write lost", func(t *testing.T) {
		anvilUpgradeE2E(t, l, full, kubeconfig, bin, applyWith)
	})

	t.Run("the CIS benchmark finds nothing failing on the first master", func(t *testing.T) {
		cisE2E(t, l, m1.Name, v1alpha1.LayoutSystemd)
	})

	t.Run("a later apply puts back the add-ons' anvil fields, keeps a user's, then plans nothing", func(t *testing.T) {
		addonsReapplyE2E(t, full, kubeconfig, apply)
	})

	t.Run("no secret in a process list, a sudo log or the output; no join credential left", func(t *testing.T) {
		for _, h := range l.Hosts {
			seen = append(seen, onHost(t, l, h.Name, "journalctl --no-pager -o cat _COMM=sudo"))
		}
		all := strings.Join(seen, "\n")
		for _, want := range []string{" join https://", "--control-plane"} {
			if !strings.Contains(all, want) {
				t.Errorf("no %q was ever seen: the check saw nothing", want)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		// The init's token, the workers' and the masters', and a
		// certificate key, at least.
		if len(secrets) < 4 {
			t.Errorf("the applies handled only %d secrets", len(secrets))
		}
		for _, s := range secrets {
			if strings.Contains(all, s) {
				t.Errorf("a secret (%s…) showed in a process list, a sudo log or the output", s[:4])
			}
		}
		cs := clientFor(t, kubeconfig)
		list, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(context.Background(), metav1.ListOptions{FieldSelector: "type=bootstrap.kubernetes.io/token"})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			t.Errorf("bootstrap token left after the joins: %s (%s)", s.Name, s.Data["description"])
		}
		if _, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), master.CertsSecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("kube-system/%s is still there (%v)", master.CertsSecretName, err)
		}
	})

	t.Run("status", func(t *testing.T) {
		st, err := Status(context.Background(), Options{ClusterFile: full})
		if err != nil {
			t.Fatal(err)
		}
		want := anvilVersion(t, bin)
		for _, h := range st.Hosts {
			if !h.Reachable || !h.Member || !h.Healthy || h.Anvil == nil || h.Anvil.Version != want || h.Node == nil || !h.Node.Ready {
				t.Errorf("%s: %+v", h.Name, h)
			}
			if h.Role == v1alpha1.RoleMaster && (h.Etcd == nil || !h.Etcd.Member || h.Etcd.Learner) {
				t.Errorf("%s: etcd %+v", h.Name, h.Etcd)
			}
		}
		if len(st.AddOns) != 1 || st.AddOns[0].Name != addons.CoreDNSName || !st.AddOns[0].Healthy {
			t.Errorf("add-ons: %+v, want CoreDNS with its replicas ready", st.AddOns)
		}
		if !st.Healthy {
			t.Errorf("the cluster is not healthy: %+v", st)
		}
		stdout, stderr, err := runAnvil(t, bin, "cluster", "status", "-f", full, "-o", "json")
		var cli ClusterStatus
		if err != nil || json.Unmarshal([]byte(stdout), &cli) != nil || !cli.Healthy || len(cli.Hosts) != len(l.Hosts) {
			t.Errorf("anvil cluster status -o json: %v\n%s\n%s", err, stdout, stderr)
		}
		b, err := Kubeconfig(context.Background(), Options{ClusterFile: full})
		if err != nil {
			t.Fatal(err)
		}
		if disk, _ := os.ReadFile(kubeconfig); !bytes.Equal(b, disk) {
			t.Error("Kubeconfig differs from the file apply wrote")
		}
		if stdout, stderr, err := runAnvil(t, bin, "cluster", "kubeconfig", "-f", full); err != nil || stdout != string(b) {
			t.Errorf("anvil cluster kubeconfig: %v\n%s", err, stderr)
		}
	})

	t.Run("status names a host cut off", func(t *testing.T) {
		l.Cut(t, w2.Name)
		t.Cleanup(func() { l.Heal(t, w2.Name) })
		st, err := Status(context.Background(), Options{ClusterFile: full, ConnectTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if st.Healthy {
			t.Error("healthy with a host cut off")
		}
		for _, h := range st.Hosts {
			switch {
			case h.Name == w2.Name && (h.Reachable || !strings.Contains(h.Error, w2.Address.String())):
				t.Errorf("%s: %+v, want unreachable, naming its address", h.Name, h)
			case h.Name != w2.Name && !h.Reachable:
				t.Errorf("%s: unreachable too: %s", h.Name, h.Error)
			}
		}
	})

	t.Run("support bundle: every reachable host, the stopped worker named, no secret", func(t *testing.T) {
		mu.Lock()
		handled := append([]string(nil), secrets...)
		mu.Unlock()
		supportBundleE2E(t, l, full, w2.Name, handled)
	})

	t.Run("a replaced host key is refused, naming host and both fingerprints", func(t *testing.T) {
		w1m, _ := l.Status.Host(w1.Name)
		old := w1m.HostKey
		pub := onHost(t, l, w1.Name, "mkdir -p /root/hostkey && cp -p /etc/ssh/ssh_host_ed25519_key* /root/hostkey/ && rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl reload ssh && cat /etc/ssh/ssh_host_ed25519_key.pub")
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
		if err != nil {
			t.Fatalf("%s's new host key %q: %v", w1.Name, pub, err)
		}
		t.Cleanup(func() {
			// Put the lab's key back, over a connection that trusts the
			// new one.
			cfg := l.SSHConfig(t, w1.Name, "")
			cfg.KnownHosts = filepath.Join(t.TempDir(), "known_hosts")
			if err := sshx.WriteKnownHosts(cfg.KnownHosts, []sshx.KnownHost{{Addresses: []string{w1.Address.String()}, Key: key}}); err != nil {
				t.Fatal(err)
			}
			c, err := sshx.Dial(context.Background(), cfg)
			if err == nil {
				defer c.Close()
				_, err = c.Output(context.Background(), "cp -p /root/hostkey/* /etc/ssh/ && rm -rf /root/hostkey && systemctl reload ssh")
			}
			if err != nil {
				t.Errorf("restore %s's host key: %v", w1.Name, err)
			}
		})
		for _, accept := range []bool{false, true} {
			o, _ := options(t, full)
			o.AcceptNewHostKeys = accept
			_, err := apply(t, o)
			var changed *sshx.HostKeyChangedError
			he := hostErr(err, w1.Name)
			if he == nil || he.Phase != "connect" || !errors.As(he, &changed) {
				t.Fatalf("accept=%v: err = %v, want %s refused in connect", accept, err, w1.Name)
			}
			for _, want := range []string{w1.Name, w1.Address.String(), old, changed.Fingerprint} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not name %s", err, want)
				}
			}
			if changed.Fingerprint != sshx.Fingerprint(key) || len(changed.Known) != 1 || changed.Known[0] != old {
				t.Errorf("offered %s, known %v; the lab recorded %s", changed.Fingerprint, changed.Known, old)
			}
			for _, h := range l.Hosts {
				if h.Name != w1.Name && hostErr(err, h.Name) != nil {
					t.Errorf("%s failed too: %v", h.Name, err)
				}
			}
		}
	})

	t.Run("reset leaves the machines clean", func(t *testing.T) {
		o, out := options(t, full)
		res, err := Reset(context.Background(), ResetOptions{Options: o, Kubeconfig: kubeconfig})
		o.Progress.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.RemovedKubeconfig != kubeconfig {
			t.Errorf("removed %q", res.RemovedKubeconfig)
		}
		// Masters leave etcd one at a time, the first master last.
		for _, m := range masters[1:] {
			if !strings.Contains(out.String(), "removed this master's etcd member "+m.Name) {
				t.Errorf("%s did not leave etcd", m.Name)
			}
		}
		for _, h := range l.Hosts {
			assertClean(t, l, h.Name)
		}
		// And a reset of a clean cluster has nothing to do.
		o, _ = options(t, full)
		res, err = Reset(context.Background(), ResetOptions{Options: o, Kubeconfig: kubeconfig})
		o.Progress.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range res.Plan {
			if s.Change {
				t.Errorf("second reset: %+v", s)
			}
		}
	})
}

// madeOrDeletedCredentials are the primary's steps for a join elsewhere.
func madeOrDeletedCredentials(s PlannedStep) bool {
	return s.Phase == "credentials" || strings.HasPrefix(s.Do, "make a join token")
}

// joinPhaseRE matches the debug log line of the join on host entering
// phase (the join's own progress lines, which runLogged logs: the time, the
// machine, the phase).
func joinPhaseRE(host, what, phase string) *regexp.Regexp {
	h := regexp.QuoteMeta(host)
	return regexp.MustCompile(`host=` + h + ` cmd="` + regexp.QuoteMeta(what) + `" line="\[ *[0-9.]+s\] (?:` + h + ` +)?` + regexp.QuoteMeta(phase) + ` `)
}

// runAnvil runs the anvil binary (no ssh-agent: the lab's key is in the
// cluster file).
func runAnvil(t *testing.T, bin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(s string) bool { return strings.HasPrefix(s, "SSH_AUTH_SOCK=") })
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func namesExcept(l *labtest.Lab, except ...string) []string {
	var out []string
	for _, h := range l.Hosts {
		if !slices.Contains(except, h.Name) {
			out = append(out, h.Name)
		}
	}
	return out
}

func clientFor(t testing.TB, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// nodesReady checks, through the kubeconfig apply wrote on the
// workstation, that the named Nodes are Ready, waiting up to a minute:
// a kubelet just started may run its pods before it posts Ready. Giving
// up, it names each Node's Ready condition with its reason.
func nodesReady(t *testing.T, kubeconfig string, names []string) {
	t.Helper()
	cs := clientFor(t, kubeconfig)
	conds := map[string]string{}
	ready := func() bool {
		list, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			conds = map[string]string{"(list)": err.Error()}
			return false
		}
		conds = map[string]string{}
		for _, n := range list.Items {
			conds[n.Name] = "no Ready condition"
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					conds[n.Name] = fmt.Sprintf("%s (%s: %s)", c.Status, c.Reason, c.Message)
					if c.Status == corev1.ConditionTrue {
						conds[n.Name] = "Ready"
					}
				}
			}
		}
		return !slices.ContainsFunc(names, func(n string) bool { return conds[n] != "Ready" })
	}
	if waitUntil(time.Minute, ready) {
		return
	}
	for _, n := range names {
		if conds[n] != "Ready" {
			c, ok := conds[n]
			if !ok {
				c = "no such Node"
			}
			t.Errorf("Node %s is not Ready after a minute: %s", n, c)
		}
	}
}

// etcdMembers checks, with `anvil status` on machine, that etcd's members
// are exactly names: each once, started, none a learner.
func etcdMembers(t *testing.T, l *labtest.Lab, machine string, names []string) {
	t.Helper()
	var st master.Status
	out := onHost(t, l, machine, "/usr/local/bin/anvil status -o json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Etcd == nil {
		t.Fatalf("anvil status on %s: %v\n%s", machine, err, out)
	}
	var got []string
	for _, m := range st.Etcd.Members {
		got = append(got, m.Name)
		if m.Learner || m.Name == "" {
			t.Errorf("etcd member %+v is a learner or not started", m)
		}
	}
	sort.Strings(got)
	want := slices.Clone(names)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("etcd members %v, want %v", got, want)
	}
}

// killSessionDuringJoin waits until ready says the join on machine is
// where it should be cut, then kills the sshd session process the join
// runs under, as a dropped connection would. It returns what it killed,
// or "" when no join showed up.
func killSessionDuringJoin(t *testing.T, l *labtest.Lab, machine string, ready func() bool) string {
	deadline := time.Now().Add(4 * time.Minute)
	for !ready() {
		if time.Now().After(deadline) {
			t.Errorf("%s: the join never got where it was to be cut", machine)
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
	re := regexp.MustCompile(`(?m)^\s*(\d+)\s+(\d+)\s+(.*)$`)
	for time.Now().Before(deadline) {
		out, err := tryRun(t, l, machine, "ps -eww -o pid=,ppid=,args=")
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		parent, args := map[int]int{}, map[int]string{}
		join := 0
		for _, m := range re.FindAllStringSubmatch(out, -1) {
			pid, _ := strconv.Atoi(m[1])
			ppid, _ := strconv.Atoi(m[2])
			parent[pid], args[pid] = ppid, m[3]
			if f := strings.Fields(m[3]); len(f) > 2 && path.Base(f[0]) == "anvil" && f[1] == "join" {
				join = pid
			}
		}
		if join == 0 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for p := parent[join]; p > 1; p = parent[p] {
			if strings.HasPrefix(args[p], "sshd:") && strings.Contains(args[p], "@notty") {
				if _, err := tryRun(t, l, machine, "kill -9 "+strconv.Itoa(p)); err != nil {
					t.Errorf("kill: %v", err)
				}
				return fmt.Sprintf("%q (pid %d) on %s, under which %q ran", args[p], p, machine, args[join])
			}
		}
		t.Errorf("no sshd session above the join:\n%s", out)
		return ""
	}
	return ""
}

// anvilUpgradeE2E applies the cluster file with another build of anvil (the
// same program with bytes after its end: another sha256, as a new build
// has) while a writer creates ConfigMaps through the kubeconfig's server:
// every host's anvil daemons (etcd, the approver, the VIP manager, the
// agent) must run the new build afterwards, no acknowledged write may be
// lost; then the same back to bin, and a third apply plans nothing.
func anvilUpgradeE2E(t *testing.T, l *labtest.Lab, clusterFile, kubeconfig, bin string, applyWith func(*testing.T, Options, string) (*ApplyResult, error)) {
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := filepath.Join(t.TempDir(), "anvil")
	if err := os.WriteFile(rebuilt, append(data, "\nanother build of anvil\n"...), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cs := clientFor(t, kubeconfig)
	w := writerClient(t, ctx, cs, kubeconfig)
	defer cs.CoreV1().Namespaces().Delete(ctx, renewNS, metav1.DeleteOptions{})
	roll := func(anvil string) {
		t.Helper()
		sum, _, err := images.HashFile(anvil)
		if err != nil {
			t.Fatal(err)
		}
		// The writer names its objects from w-00000 on: the last roll's go.
		if err := cs.CoreV1().ConfigMaps(renewNS).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		wr := startWriter(ctx, w)
		o, _ := options(t, clusterFile)
		res, err := applyWith(t, o, anvil)
		acked, failures, gap := wr.stop()
		if err != nil {
			t.Fatal(err)
		}
		restarted := map[string]string{}
		for _, s := range res.Plan {
			if s.Change && (s.Phase == "upgrade" || s.Phase == "upgrade-workers") {
				restarted[s.Host] = s.Do
			}
		}
		for _, h := range l.Hosts {
			r, ok := restarted[h.Name]
			if !ok {
				t.Errorf("%s: the apply restarted nothing", h.Name)
				continue
			}
			t.Logf("%s: %s", h.Name, r)
			// Each anvil daemon's process, by its unit: what it runs.
			out := l.Run(t, h.Name, `for u in anvil-etcd anvil-approver anvil-vip anvil-agent; do p=$(systemctl show -p MainPID --value $u.service); [ "${p:-0}" -gt 0 ] && echo "$u $(sha256sum </proc/$p/exe | cut -d' ' -f1) $(readlink /proc/$p/exe)"; done; true`)
			var units []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) < 3 {
					continue
				}
				units = append(units, f[0])
				if f[1] != sum || strings.Contains(line, "(deleted)") {
					t.Errorf("%s: %s runs another build than the one applied (%s): %s", h.Name, f[0], sum[:12], line)
				}
			}
			want := []string{"anvil-agent"} // and the VIP manager where the file has a VIP
			if h.Role == v1alpha1.RoleMaster {
				want = append(want, "anvil-etcd", "anvil-approver")
			}
			for _, u := range want {
				if !slices.Contains(units, u) {
					t.Errorf("%s: %s is not running:\n%s", h.Name, u, out)
				}
			}
		}
		if lost := lostWrites(t, cs, acked); len(lost) > 0 || len(acked) == 0 {
			t.Errorf("%d of %d acknowledged writes are gone: %v", len(lost), len(acked), lost)
		}
		t.Logf("anvil %s applied in %s: %d writes acknowledged, %d failed, none lost; longest gap between acknowledged writes: %s",
			sum[:12], fmtDuration(res.Elapsed), len(acked), failures, fmtDuration(gap))
	}
	roll(rebuilt)
	if t.Failed() {
		return
	}
	roll(bin)
	o, _ := options(t, clusterFile)
	res, err := applyWith(t, o, bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Plan {
		if s.Change {
			t.Errorf("an apply after the restarts changes something: %+v", s)
		}
	}
}
