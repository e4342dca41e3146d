package master_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/node"
)

// holdPortEnv makes the test binary a stand-in process that holds a port.
const holdPortEnv = "ANVIL_TEST_HOLD_PORT"

func TestMain(m *testing.M) {
	if spec := os.Getenv(echoEnv); spec != "" {
		serveEcho(spec)
		return
	}
	if addr := os.Getenv(holdPortEnv); addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			os.Exit(1)
		}
		defer l.Close()
		time.Sleep(2 * time.Minute)
		return
	}
	os.Exit(m.Run())
}

// TestInitE2E is the end-to-end check: a real control plane from
// anvil init (process layout), used through client-go, its security
// properties checked from outside, a component killed and restarted, and a
// reset that leaves nothing behind.
func TestInitE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cp := mastertest.Start(t, mastertest.Options{NoCleanup: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := cp.Client(t)

	t.Run("client-go round trip", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "e2e"}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: "e2e"}, Data: map[string]string{"k": "v"}}
		if _, err := cs.CoreV1().ConfigMaps("e2e").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := cs.CoreV1().ConfigMaps("e2e").Get(ctx, "hello", metav1.GetOptions{})
		if err != nil || got.Data["k"] != "v" {
			t.Fatalf("read back %v: %v", got, err)
		}
	})

	t.Run("a bootstrap token reads the node settings and nothing else", func(t *testing.T) {
		cfg := rest.CopyConfig(cp.RESTConfig(t))
		cfg.Impersonate = rest.ImpersonationConfig{
			UserName: "system:bootstrap:abcdef",
			Groups:   []string{"system:bootstrappers", master.NodeBootstrapGroup},
		}
		tok, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cms := tok.CoreV1().ConfigMaps(node.ClusterConfigNamespace)
		cm, err := cms.Get(ctx, node.ClusterConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get %s as a bootstrap token: %v", node.ClusterConfigMap, err)
		}
		cc, err := node.ParseClusterConfigMap(cm)
		if err != nil {
			t.Fatal(err)
		}
		if want := node.ClusterConfigOf(cp.Cluster); cc != want {
			t.Errorf("published node settings %+v, want %+v", cc, want)
		}
		if _, err := cms.List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("a bootstrap token lists configmaps: %v", err)
		}
		if _, err := cms.Get(ctx, "kube-proxy", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("a bootstrap token gets another configmap: %v", err)
		}
	})

	t.Run("anonymous only for health", func(t *testing.T) {
		caPEM, err := os.ReadFile(filepath.Join(cp.Root.PKI(), "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		for path, want := range map[string][]int{"/api": {401, 403}, "/api/v1/secrets": {401, 403}, "/readyz": {200}, "/livez": {200}} {
			resp, err := hc.Get(cp.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			ok := false
			for _, w := range want {
				ok = ok || resp.StatusCode == w
			}
			if !ok {
				t.Errorf("anonymous GET %s: %d, want %v", path, resp.StatusCode, want)
			}
		}
	})

	t.Run("etcd refuses clients without an etcd-CA certificate", func(t *testing.T) {
		etcdCA, _ := os.ReadFile(filepath.Join(cp.Root.PKI(), "etcd/ca.crt"))
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(etcdCA)
		endpoint := cp.EtcdEndpoint()
		kubeCert, err := tls.LoadX509KeyPair(filepath.Join(cp.Root.PKI(), "apiserver-kubelet-client.crt"), filepath.Join(cp.Root.PKI(), "apiserver-kubelet-client.key"))
		if err != nil {
			t.Fatal(err)
		}
		for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "kubernetes CA certificate": {kubeCert}} {
			cli, err := clientv3.New(clientv3.Config{
				Endpoints: []string{endpoint}, DialTimeout: 3 * time.Second, Logger: zap.NewNop(),
				TLS: &tls.Config{RootCAs: pool, Certificates: certs},
			})
			if err == nil {
				c, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err = cli.Get(c, "/registry", clientv3.WithPrefix(), clientv3.WithCountOnly())
				cancel()
				cli.Close()
			}
			if err == nil {
				t.Errorf("etcd accepted a client with %s", name)
			}
		}
	})

	t.Run("secrets encrypted at rest", func(t *testing.T) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pw", Namespace: "e2e"}, StringData: map[string]string{"password": "hunter2-plaintext"}}
		if _, err := cs.CoreV1().Secrets("e2e").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cli := etcdClient(t, ctx, cp)
		resp, err := cli.Get(ctx, "/registry/secrets/e2e/pw")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("raw secret: %v %v", resp, err)
		}
		raw := resp.Kvs[0].Value
		if !bytes.HasPrefix(raw, []byte("k8s:enc:")) || bytes.Contains(raw, []byte("hunter2-plaintext")) {
			t.Fatalf("secret is not encrypted in etcd: %q", raw[:min(len(raw), 40)])
		}
	})

	t.Run("a killed apiserver is restarted and counted", func(t *testing.T) {
		st := statusOf(t, cp)
		pid := componentOf(t, st, "kube-apiserver").PID
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			st = statusOf(t, cp)
			c := componentOf(t, st, "kube-apiserver")
			if c.Restarts >= 1 && c.Healthy && c.PID != pid {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("apiserver not back: %+v", c)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("a second init refuses without --force", func(t *testing.T) {
		out, err := cp.Run(ctx, "init", "-f", cp.ClusterFile, "--node", "m1", "--layout", "process", "--root", string(cp.Root))
		if err == nil || !strings.Contains(out, "already an initialised master") || !strings.Contains(out, "--force") {
			t.Fatalf("second init: %v\n%s", err, out)
		}
	})

	t.Run("reset leaves nothing", func(t *testing.T) {
		cp.Reset(t)
		var left []string
		filepath.WalkDir(string(cp.Root), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				left = append(left, p)
			}
			return nil
		})
		if len(left) > 0 {
			t.Errorf("files left after reset: %v", left)
		}
		if pids, _ := exec.Command("ip", "netns", "pids", cp.NS.Name).Output(); len(bytes.TrimSpace(pids)) > 0 {
			t.Errorf("processes left in the namespace after reset: %s", pids)
		}
		if mounts, _ := os.ReadFile("/proc/mounts"); bytes.Contains(mounts, []byte(string(cp.Root))) {
			t.Errorf("mounts left under %s", cp.Root)
		}
	})
}

// TestInitCrashLoopRollsBack: an apiserver that cannot start makes init
// fail well before its timeout, with the apiserver's own last words, and
// leaves no process running.
func TestInitCrashLoopRollsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cp := mastertest.Prepare(t, mastertest.Options{NoCleanup: true, APIServerArgs: map[string]string{"v": "not-a-number"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := cp.Run(ctx, cp.InitArgs()...)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("init succeeded with a broken apiserver:\n%s", out)
	}
	if !strings.Contains(out, "kube-apiserver not ready: crash-looping") || !strings.Contains(out, "not-a-number") {
		t.Errorf("init did not report the crash loop with the apiserver's log:\n%s", out)
	}
	if took > 90*time.Second {
		t.Errorf("init took %s to notice a crash loop", took)
	}
	if pids, _ := exec.Command("ip", "netns", "pids", cp.NS.Name).Output(); len(bytes.TrimSpace(pids)) > 0 {
		t.Errorf("rollback left processes: %s", pids)
	}
	if _, err := os.Stat(cp.Root.EtcdData()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("rollback left the etcd data it created: %v", err)
	}
	cp.Reset(t)
}

// TestInitNamesTheProcessOnABusyPort checks preflight's port check.
func TestInitNamesTheProcessOnABusyPort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cp := mastertest.Prepare(t, mastertest.Options{NoCleanup: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	holder := cp.NS.Command(ctx, "env", holdPortEnv+"=0.0.0.0:6443", self)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	time.Sleep(300 * time.Millisecond)
	out, err := cp.Run(ctx, cp.InitArgs()...)
	want := "port 6443 (kube-apiserver https) is in use by " + filepath.Base(self)[:min(15, len(filepath.Base(self)))] + " (pid " + strconv.Itoa(holder.Process.Pid)
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("want preflight to say %q, got %v:\n%s", want, err, out)
	}
	if _, err := os.Stat(cp.Root.PKI()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed preflight wrote %s", cp.Root.PKI())
	}
}

func statusOf(t testing.TB, cp *mastertest.ControlPlane) *master.Status { return cp.Status(t) }

func componentOf(t *testing.T, st *master.Status, name string) master.ComponentStatus {
	t.Helper()
	for _, c := range st.Components {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no component %s in status", name)
	return master.ComponentStatus{}
}

func etcdClient(t *testing.T, ctx context.Context, cp *mastertest.ControlPlane) *clientv3.Client {
	t.Helper()
	cli, err := etcd.Dial(ctx, cp.Root, cp.EtcdEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
