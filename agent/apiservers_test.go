package agent

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAPIServerURLs(t *testing.T) {
	// As the apiserver serves it, trimmed.
	const endpoints = `{"kind":"Endpoints","apiVersion":"v1","metadata":{"name":"kubernetes","namespace":"default"},
"subsets":[
 {"addresses":[{"ip":"10.0.0.12"},{"ip":"10.0.0.11"},{"ip":"fd00::13"},{"ip":"not-an-ip"}],
  "notReadyAddresses":[{"ip":"10.0.0.14"}],
  "ports":[{"name":"https","port":6443,"protocol":"TCP"}]},
 {"addresses":[{"ip":"10.0.0.11"}],"ports":[{"port":6443}]},
 {"addresses":[{"ip":"10.0.0.15"}],"ports":[{"name":"a","port":1},{"name":"b","port":2}]}]}`
	var ep apiserverEndpoints
	if err := json.Unmarshal([]byte(endpoints), &ep); err != nil {
		t.Fatal(err)
	}
	want := []string{"https://10.0.0.11:6443", "https://10.0.0.12:6443", "https://[fd00::13]:6443"}
	if got := apiserverURLs(&ep); !slices.Equal(got, want) {
		t.Errorf("apiserverURLs = %v, want %v", got, want)
	}
	if got := apiserverURLs(&apiserverEndpoints{}); len(got) != 0 {
		t.Errorf("no subsets: %v", got)
	}
}

// endpointsOf lists servers as the apiservers' Endpoints would (one subset
// per server here, since the fakes share 127.0.0.1 on different ports).
func endpointsOf(t *testing.T, servers ...string) *apiserverEndpoints {
	t.Helper()
	ep := &apiserverEndpoints{}
	for _, s := range servers {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := net.SplitHostPort(u.Host)
		p, _ := strconv.Atoi(port)
		ep.Subsets = append(ep.Subsets, endpointSubset{
			Addresses: []endpointAddress{{IP: host}},
			Ports:     []endpointPort{{Name: "https", Port: int32(p)}},
		})
	}
	return ep
}

// TestAgentLearnsAPIServers: an agent configured with one apiserver learns
// the others from the kubernetes Endpoints, fails over to one of them when
// its own goes away, and after a restart with its own still gone starts
// on what it learned (kept beside its kubeconfig).
func TestAgentLearnsAPIServers(t *testing.T) {
	ca, fc, _ := newFakeSetup(t, 0)
	a, b := newFakeAPIServer(t, ca, ca), newFakeAPIServer(t, ca, ca)
	var downA atomic.Bool
	a.extra = func(w http.ResponseWriter, r *http.Request) bool {
		if downA.Load() {
			writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "gone")
			return true
		}
		return fc.serve(w, r)
	}
	fc.mount(b)
	fc.apiservers = endpointsOf(t, a.URL(), b.URL())

	var kubeconfig string
	ta := startAgent(t, ca, []string{a.URL()}, func(c *Config, _ *Options) { kubeconfig = c.Kubeconfig })
	learned := filepath.Join(filepath.Dir(kubeconfig), LearnedServersFile)
	eventually(t, "learned both apiservers", func() (bool, string) {
		return slices.Equal(ta.a.cli.serverList(), []string{a.URL(), b.URL()}), ""
	})
	eventually(t, "kept them", func() (bool, string) {
		data, err := os.ReadFile(learned)
		var ls learnedServers
		if err == nil {
			err = json.Unmarshal(data, &ls)
		}
		return err == nil && slices.Contains(ls.Servers, b.URL()), string(data)
	})
	if fi, err := os.Stat(learned); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want mode 0600", learned, err, fi)
	}

	downA.Store(true)
	before := ta.renewed.Load()
	eventually(t, "failed over to the learned apiserver", func() (bool, string) {
		return ta.a.Server() == b.URL() && ta.renewed.Load() > before+3, ta.a.Server()
	})
	ta.stop()

	// A new run, its configured apiserver still down: it starts on the
	// learned one. The Node is deleted meanwhile, so the new run must
	// register it again, through b.
	fc.mu.Lock()
	delete(fc.nodes, "w1")
	fc.mu.Unlock()
	again, err := New(ta.cfg, Options{Facts: func() (Facts, error) { return *testFacts(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if got := again.cli.serverList(); !slices.Equal(got, []string{a.URL(), b.URL()}) {
		t.Fatalf("a restarted agent tries %v, want the configured then the learned apiservers", got)
	}
	ta2 := runAgent(t, again)
	eventually(t, "registered again through the learned apiserver", func() (bool, string) {
		return fc.node("w1") != nil && ta2.a.Server() == b.URL(), ta2.a.Server()
	})
}
