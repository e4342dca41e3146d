package agent

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/node"
)

// TestAgentRunsPodsLeavesTheNodeToTheKubelet: with runtime containerd the
// agent never creates, reads or patches a Node or a Lease (the kubelet
// owns them), yet keeps learning the apiservers and stays healthy.
func TestAgentRunsPodsLeavesTheNodeToTheKubelet(t *testing.T) {
	ca, fc, srvs := newFakeSetup(t, 1)
	fc.apiservers = &apiserverEndpoints{}
	root := hostfs.Root(t.TempDir())
	ta := startAgent(t, ca, []string{srvs[0].URL()}, func(c *Config, _ *Options) {
		c.Runtime, c.Network, c.BinDir, c.Root = v1alpha1.RuntimeContainerd, v1alpha1.PodNetworkNone, "/nonexistent/bin", root
	})
	eventually(t, "the agent learns the apiservers", func() (bool, string) {
		for _, r := range srvs[0].requests() {
			if r.Path == apiserversPath {
				return true, ""
			}
		}
		return false, "no read of the apiservers' Endpoints"
	})
	time.Sleep(500 * time.Millisecond) // what a Lease loop would have renewed several times in
	for _, r := range srvs[0].requests() {
		if strings.HasPrefix(r.Path, nodesPath) || strings.HasPrefix(r.Path, leasePath) {
			t.Errorf("the agent sent %s %s on a machine whose kubelet owns the Node", r.Method, r.Path)
		}
	}
	if len(fc.nodes) > 0 || len(fc.leases) > 0 {
		t.Errorf("Nodes %v and Leases %v exist", fc.nodes, fc.leases)
	}
	if !ta.a.Healthy() {
		t.Error("the agent is not healthy")
	}
	if _, ok := ta.a.PodNetworkStatus(); ok {
		t.Error("a pod network runs with network none")
	}
}

// TestPodnetClientFailsOver: the pod network's clientset uses the agent's
// certificate and moves to the next apiserver when one does not answer.
func TestPodnetClientFailsOver(t *testing.T) {
	ca, _, srvs := newFakeSetup(t, 2)
	ta := startAgent(t, ca, []string{srvs[0].URL(), srvs[1].URL()}, func(c *Config, _ *Options) {
		c.Runtime, c.Network, c.BinDir = v1alpha1.RuntimeContainerd, v1alpha1.PodNetworkNone, "/nonexistent/bin"
	})
	srvs[0].srv.Close()
	cs, err := ta.a.clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The fake apiserver answers a list with an API error; an answer is
	// all this test needs.
	if _, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil && !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) {
		t.Fatalf("list Nodes: %v", err)
	}
	var seen bool
	for _, r := range srvs[1].requests() {
		if r.Method == "GET" && strings.HasPrefix(r.Path, nodesPath) {
			seen = true
			if !r.ClientCert {
				t.Error("the clientset sent no client certificate")
			}
		}
	}
	if !seen {
		t.Fatal("the second apiserver saw no Node list")
	}
	if ta.a.Server() != srvs[1].URL() {
		t.Errorf("the agent uses %s after the failover, want %s", ta.a.Server(), srvs[1].URL())
	}
}

// TestImageWatcher: an archive is imported once it held still for a poll,
// once; a file that is not an image is logged once, by name, and skipped.
func TestImageWatcher(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	imports := 0
	w := &imageWatcher{dir: dir, log: slog.New(slog.NewTextHandler(&logs, nil)),
		importAll: func(context.Context) (node.ImportResult, error) {
			imports++
			var res node.ImportResult
			if _, err := os.Stat(filepath.Join(dir, "bad.tar")); err == nil {
				res.Problems = append(res.Problems, &node.NotAnImageError{File: filepath.Join(dir, "bad.tar"), Reason: "no manifest.json"})
			}
			return res, nil
		}}
	ctx := context.Background()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	step := func(want bool, what string) {
		t.Helper()
		if got := w.pass(ctx); got != want {
			t.Fatalf("%s: imported %v, want %v", what, got, want)
		}
	}
	step(false, "first look")
	step(true, "an empty directory that held still")
	step(false, "nothing changed")
	write("app.tar", "half")
	step(false, "an archive being written")
	write("app.tar", "half and the rest")
	step(false, "an archive still growing")
	step(true, "the archive held still")
	step(false, "the same archive again")
	write("bad.tar", "not a tar")
	step(false, "a new file")
	step(true, "the new file held still")
	write("other.tar", "x")
	step(false, "another file")
	step(true, "another file held still")
	step(false, "nothing changed")
	if imports != 4 {
		t.Errorf("%d imports, want 4", imports)
	}
	if n := strings.Count(logs.String(), "skipping a file"); n != 1 || !strings.Contains(logs.String(), "file="+filepath.Join(dir, "bad.tar")) {
		t.Errorf("bad.tar logged %d times, want once and by name:\n%s", n, logs.String())
	}
}

func TestConfigRunsPodsNeedsBinDir(t *testing.T) {
	c := &Config{NodeName: "w1", Servers: []string{"https://a:6443"}, Runtime: v1alpha1.RuntimeContainerd}
	c.Default()
	err := c.Validate()
	for _, field := range []string{"binDir", "podCIDR"} {
		if err == nil || !strings.Contains(err.Error(), field+":") {
			t.Errorf("a runs-pods config without %s: %v", field, err)
		}
	}
}
