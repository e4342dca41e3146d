package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// fakeCluster is the state behind fake apiservers: Nodes and Leases with
// the semantics the agent relies on — create conflicts, resource versions,
// merge and strategic merge patches, and the NodeRestriction rules (a node
// may not change its taints or set kubernetes.io labels outside the
// kubelet's set).
type fakeCluster struct {
	mu      sync.Mutex
	rv      int
	nodes   map[string]*corev1.Node
	leases  map[string]*coordinationv1.Lease
	patches []string // "PATCH path body"
	// protobuf counts requests that came as protobuf, by path kind.
	protobuf map[string]int
	down     atomic.Bool
	// apiservers is what default/kubernetes Endpoints lists.
	apiservers *apiserverEndpoints
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{nodes: map[string]*corev1.Node{}, leases: map[string]*coordinationv1.Lease{}, protobuf: map[string]int{}}
}

// mount serves the cluster from a fake apiserver.
func (fc *fakeCluster) mount(srv *fakeAPIServer) {
	srv.extra = fc.serve
}

func (fc *fakeCluster) next() string {
	fc.rv++
	return strconv.Itoa(fc.rv)
}

func (fc *fakeCluster) serve(w http.ResponseWriter, r *http.Request) bool {
	if fc.down.Load() {
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "down")
		return true
	}
	if strings.HasPrefix(r.URL.Path, csrPath) {
		return false // the fake apiserver's own CSR API
	}
	user := ""
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		user = strings.TrimPrefix(r.TLS.PeerCertificates[0].Subject.CommonName, NodeUserPrefix)
	}
	if user == "" {
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
		return true
	}
	// The recorder read the body already; it is in the request log.
	body := srvLastBody(r)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if strings.HasPrefix(r.Header.Get("Content-Type"), contentProtobuf) {
		fc.protobuf[strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]+" "+r.Method]++
	}
	switch {
	case strings.HasPrefix(r.URL.Path, nodesPath):
		fc.serveNode(w, r, user, body)
	case strings.HasPrefix(r.URL.Path, leasePath):
		fc.serveLease(w, r, user, body)
	case r.Method == "GET" && r.URL.Path == apiserversPath && fc.apiservers != nil:
		json.NewEncoder(w).Encode(fc.apiservers)
	default:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not found")
	}
	return true
}

// srvLastBody gets the body the recording server stashed in the context.
func srvLastBody(r *http.Request) []byte {
	b, _ := r.Context().Value(bodyKey{}).([]byte)
	return b
}

type bodyKey struct{}

func decodeBody(r *http.Request, body []byte, out protoObject) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), contentProtobuf) {
		return decodeProtobuf(body, out)
	}
	return json.Unmarshal(body, out)
}

func (fc *fakeCluster) serveNode(w http.ResponseWriter, r *http.Request, user string, body []byte) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, nodesPath), "/")
	name, sub, _ := strings.Cut(rest, "/")
	if r.Method != "POST" && name != user {
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, "node "+user+" may not touch node "+name)
		return
	}
	switch r.Method {
	case "POST":
		var n corev1.Node
		if err := decodeBody(r, body, &n); err != nil {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		if n.Name != user {
			writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, "not your node")
			return
		}
		if bad := forbiddenLabels(n.Labels, nil); bad != "" {
			writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, "node is not allowed to set the following labels: "+bad)
			return
		}
		if _, ok := fc.nodes[n.Name]; ok {
			writeStatus(w, http.StatusConflict, metav1.StatusReasonAlreadyExists, "nodes \""+n.Name+"\" already exists")
			return
		}
		n.UID = types.UID("uid-" + n.Name)
		n.ResourceVersion = fc.next()
		fc.nodes[n.Name] = &n
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(&n)
	case "GET":
		n, ok := fc.nodes[name]
		if !ok {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "nodes \""+name+"\" not found")
			return
		}
		json.NewEncoder(w).Encode(n)
	case "PATCH":
		n, ok := fc.nodes[name]
		if !ok {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not found")
			return
		}
		fc.patches = append(fc.patches, "PATCH "+r.URL.Path+" "+string(body))
		orig, _ := json.Marshal(n)
		var patched []byte
		var err error
		if strings.HasPrefix(r.Header.Get("Content-Type"), contentStrategicPatch) {
			patched, err = strategicpatch.StrategicMergePatch(orig, body, corev1.Node{})
		} else {
			patched, err = jsonpatch.MergePatch(orig, body)
		}
		if err != nil {
			writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, err.Error())
			return
		}
		var out corev1.Node
		json.Unmarshal(patched, &out)
		if sub == "status" {
			out.Spec, out.ObjectMeta = n.Spec, n.ObjectMeta
		} else {
			out.Status = n.Status
			if !apiequality.Semantic.DeepEqual(out.Spec.Taints, n.Spec.Taints) {
				writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, "node is not allowed to modify taints")
				return
			}
			if bad := forbiddenLabels(out.Labels, n.Labels); bad != "" {
				writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, "is not allowed to modify labels: "+bad)
				return
			}
		}
		out.ResourceVersion = fc.next()
		fc.nodes[name] = &out
		json.NewEncoder(w).Encode(&out)
	}
}

// forbiddenLabels lists the labels that differ between a and b that a
// node may not set (NodeRestriction).
func forbiddenLabels(a, b map[string]string) string {
	var bad []string
	for k, v := range a {
		if bv, ok := b[k]; (!ok || bv != v) && !SelfSettableLabel(k) {
			bad = append(bad, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && !SelfSettableLabel(k) {
			bad = append(bad, k)
		}
	}
	return strings.Join(bad, ", ")
}

func (fc *fakeCluster) serveLease(w http.ResponseWriter, r *http.Request, user string, body []byte) {
	name := strings.Trim(strings.TrimPrefix(r.URL.Path, leasePath), "/")
	switch r.Method {
	case "GET":
		l, ok := fc.leases[name]
		if !ok {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not found")
			return
		}
		json.NewEncoder(w).Encode(l)
	case "POST", "PUT":
		var l coordinationv1.Lease
		if err := decodeBody(r, body, &l); err != nil {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		if l.Name != user {
			writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, "can only access node lease with the same name as the requesting node")
			return
		}
		cur, exists := fc.leases[l.Name]
		if r.Method == "POST" && exists {
			writeStatus(w, http.StatusConflict, metav1.StatusReasonAlreadyExists, "exists")
			return
		}
		if r.Method == "PUT" && (!exists || cur.ResourceVersion != l.ResourceVersion) {
			writeStatus(w, http.StatusConflict, metav1.StatusReasonConflict, "the object has been modified")
			return
		}
		l.ResourceVersion = fc.next()
		fc.leases[l.Name] = &l
		if r.Method == "POST" {
			w.WriteHeader(http.StatusCreated)
		}
		json.NewEncoder(w).Encode(&l)
	}
}

func (fc *fakeCluster) node(name string) *corev1.Node {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if n, ok := fc.nodes[name]; ok {
		return n.DeepCopy()
	}
	return nil
}

func (fc *fakeCluster) lease(name string) *coordinationv1.Lease {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if l, ok := fc.leases[name]; ok {
		return l.DeepCopy()
	}
	return nil
}

// testAgent is an agent with fast intervals against fake apiservers.
type testAgent struct {
	a       *Agent
	cfg     *Config
	cancel  context.CancelFunc
	done    chan struct{}
	facts   atomic.Pointer[Facts]
	renewed atomic.Int64
}

func startAgent(t *testing.T, ca *testCA, servers []string, mutate func(*Config, *Options)) *testAgent {
	t.Helper()
	creds, err := MintCredentials(MintOptions{NodeName: "w1", Server: servers[0], CACert: ca.cert, CAKey: ca.key})
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfig(kc, "w1", creds); err != nil {
		t.Fatal(err)
	}
	no := false
	cfg := &Config{
		NodeName: "w1", Servers: servers, Kubeconfig: kc, RotateCertificates: &no,
		LeaseDuration: time.Second, RenewInterval: 100 * time.Millisecond,
		StatusUpdateInterval: 100 * time.Millisecond, StatusReportInterval: time.Second,
	}
	cfg.Default()
	ta := &testAgent{cfg: cfg, done: make(chan struct{})}
	f := testFacts()
	ta.facts.Store(f)
	o := Options{
		Facts:   func() (Facts, error) { return *ta.facts.Load(), nil },
		OnRenew: func(_ time.Duration, err error) { ta.renewed.Add(1) },
	}
	if mutate != nil {
		mutate(cfg, &o)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ta.a, err = New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ta.run(t)
	return ta
}

// runAgent runs an agent made with New until the test ends.
func runAgent(t *testing.T, a *Agent) *testAgent {
	ta := &testAgent{a: a, cfg: a.cfg, done: make(chan struct{})}
	ta.run(t)
	return ta
}

func (ta *testAgent) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel = cancel
	go func() {
		defer close(ta.done)
		ta.a.Run(ctx)
	}()
	t.Cleanup(ta.stop)
}

func (ta *testAgent) stop() {
	ta.cancel()
	<-ta.done
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, desc := cond()
		if ok {
			return
		}
		last = desc
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10s (%s)", what, last)
}

func readyOf(n *corev1.Node) corev1.ConditionStatus {
	if n == nil {
		return ""
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

func newFakeSetup(t *testing.T, n int) (*testCA, *fakeCluster, []*fakeAPIServer) {
	ca := newTestCA(t, "kubernetes")
	fc := newFakeCluster()
	var srvs []*fakeAPIServer
	for range n {
		s := newFakeAPIServer(t, ca, ca)
		fc.mount(s)
		srvs = append(srvs, s)
	}
	return ca, fc, srvs
}

func TestAgentRegistersAndHeartbeats(t *testing.T) {
	ca, fc, srvs := newFakeSetup(t, 1)
	ta := startAgent(t, ca, []string{srvs[0].URL()}, nil)
	eventually(t, "registered and renewing", func() (bool, string) {
		l := fc.lease("w1")
		return ta.a.Registered() && l != nil && ta.renewed.Load() >= 3, fmt.Sprintf("registered %v, lease %v", ta.a.Registered(), l != nil)
	})
	n := fc.node("w1")
	if readyOf(n) != corev1.ConditionTrue || len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != NoRuntimeTaintKey {
		t.Fatalf("node %+v", n)
	}
	if n.Labels["kubernetes.io/hostname"] != "w1" || n.Annotations[InterfacesAnnotation] == "" {
		t.Errorf("labels %v annotations %v", n.Labels, n.Annotations)
	}
	l := fc.lease("w1")
	if *l.Spec.HolderIdentity != "w1" || *l.Spec.LeaseDurationSeconds != 1 || len(l.OwnerReferences) != 1 || l.OwnerReferences[0].UID != n.UID {
		t.Errorf("lease %+v", l)
	}
	first := l.Spec.RenewTime.Time
	eventually(t, "lease renewed", func() (bool, string) {
		return fc.lease("w1").Spec.RenewTime.After(first), "not renewed"
	})
	fc.mu.Lock()
	proto := fc.protobuf["apis PUT"]
	fc.mu.Unlock()
	if proto == 0 {
		t.Error("lease renewals were not sent as protobuf")
	}

	// Memory pressure shows up in the status at the next tick.
	low := *testFacts()
	low.MemAvailableBytes = 10 << 20
	ta.facts.Store(&low)
	eventually(t, "memory pressure posted", func() (bool, string) {
		n := fc.node("w1")
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeMemoryPressure {
				return c.Status == corev1.ConditionTrue, string(c.Status)
			}
		}
		return false, "no condition"
	})
	// A patch carries the conditions, not the unchanged capacity.
	fc.mu.Lock()
	last := fc.patches[len(fc.patches)-1]
	fc.mu.Unlock()
	if !strings.Contains(last, "/status") || strings.Contains(last, "capacity") {
		t.Errorf("last patch %s", last)
	}
}

// TestAgentReregistersExistingNode: a Node left by an earlier run (with an
// administrator's role label and other taints) is adopted: the agent's
// labels are merged in, the role label and the taints stay.
func TestAgentReregistersExistingNode(t *testing.T) {
	ca, fc, srvs := newFakeSetup(t, 1)
	fc.nodes["w1"] = &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "w1", UID: "old-uid", ResourceVersion: "1", Labels: map[string]string{ControlPlaneRoleKey: "", "kubernetes.io/hostname": "w1"}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "dedicated", Effect: corev1.TaintEffectNoSchedule}}},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}},
	}
	startAgent(t, ca, []string{srvs[0].URL()}, func(c *Config, _ *Options) { c.Labels = map[string]string{"example.com/rack": "r7"} })
	eventually(t, "adopted and Ready", func() (bool, string) {
		n := fc.node("w1")
		return readyOf(n) == corev1.ConditionTrue && n.Labels["example.com/rack"] == "r7", fmt.Sprintf("%v %v", readyOf(n), n.Labels)
	})
	n := fc.node("w1")
	if _, ok := n.Labels[ControlPlaneRoleKey]; !ok || len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "dedicated" || n.UID != "old-uid" {
		t.Errorf("adopted node %+v", n)
	}
}

// TestAgentFailsOverAndRecovers: the first apiserver goes away, the agent
// moves to the second without missing its heartbeat; when both are down
// the node lifecycle controller marks the Node Unknown, and once one is
// back the agent posts Ready at once, without a restart.
func TestAgentFailsOverAndRecovers(t *testing.T) {
	ca, fc, _ := newFakeSetup(t, 0)
	a, b := newFakeAPIServer(t, ca, ca), newFakeAPIServer(t, ca, ca)
	fc.mount(b)
	downA := atomic.Bool{}
	a.extra = func(w http.ResponseWriter, r *http.Request) bool {
		if downA.Load() {
			writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "gone")
			return true
		}
		return fc.serve(w, r)
	}
	ta := startAgent(t, ca, []string{a.URL(), b.URL()}, nil)
	eventually(t, "registered", func() (bool, string) { return ta.a.Registered() && ta.a.Server() == a.URL(), ta.a.Server() })

	downA.Store(true)
	before := ta.renewed.Load()
	eventually(t, "failed over", func() (bool, string) {
		return ta.a.Server() == b.URL() && ta.renewed.Load() > before+3, ta.a.Server()
	})

	// Both down; the controller marks the Node Unknown meanwhile.
	fc.down.Store(true)
	time.Sleep(300 * time.Millisecond)
	fc.mu.Lock()
	for i := range fc.nodes["w1"].Status.Conditions {
		fc.nodes["w1"].Status.Conditions[i].Status = corev1.ConditionUnknown
	}
	fc.mu.Unlock()
	fc.down.Store(false)
	start := time.Now()
	eventually(t, "Ready again", func() (bool, string) {
		return readyOf(fc.node("w1")) == corev1.ConditionTrue, string(readyOf(fc.node("w1")))
	})
	t.Logf("Ready %s after the apiserver came back", time.Since(start).Round(time.Millisecond))
}

// TestAgentReregistersDeletedNode: an administrator deleted the Node; the
// agent's next check registers it again.
func TestAgentReregistersDeletedNode(t *testing.T) {
	ca, fc, srvs := newFakeSetup(t, 1)
	ta := startAgent(t, ca, []string{srvs[0].URL()}, nil)
	eventually(t, "registered", func() (bool, string) { return fc.node("w1") != nil && ta.a.Registered(), "" })
	fc.mu.Lock()
	delete(fc.nodes, "w1")
	fc.mu.Unlock()
	eventually(t, "registered again", func() (bool, string) { return fc.node("w1") != nil, "missing" })
}

// TestAgentRotatesCertificate: a short-lived certificate is renewed
// through a CSR made with the current one, written to the kubeconfig, and
// used by the next connections.
func TestAgentRotatesCertificate(t *testing.T) {
	ca, fc, srvs := newFakeSetup(t, 1)
	srvs[0].validity = time.Hour
	short, err := MintCredentials(MintOptions{NodeName: "w1", Server: srvs[0].URL(), CACert: ca.cert, CAKey: ca.key, Validity: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	ta := startAgent(t, ca, []string{srvs[0].URL()}, func(c *Config, _ *Options) {
		c.RotateCertificates = &yes
		if err := writeKubeconfig(c.Kubeconfig, "w1", short); err != nil {
			t.Fatal(err)
		}
	})
	// The mutate hook ran before New, so the agent starts with the short
	// certificate: 70–90% of its life (which began 5 minutes back) is past.
	eventually(t, "rotated", func() (bool, string) {
		creds, err := ReadKubeconfig(ta.cfg.Kubeconfig)
		if err != nil {
			return false, err.Error()
		}
		tc, _ := creds.cert()
		return time.Until(tc.Leaf.NotAfter) > 30*time.Minute, tc.Leaf.NotAfter.String()
	})
	if string(ta.a.ClientCertificate()) == string(short.CertPEM) {
		t.Error("the agent still uses the old certificate")
	}
	eventually(t, "still renewing", func() (bool, string) { return fc.lease("w1") != nil, "" })
}

// TestAgentStatusCadence: with nothing changing, the status is posted once
// per report interval, not at every update tick — and still once per
// report interval (the node lifecycle controller reads the Lease, but
// kubectl and the scheduler read the Node's heartbeat).
func TestAgentStatusCadence(t *testing.T) {
	ca, fc, srvs := newFakeSetup(t, 1)
	ta := startAgent(t, ca, []string{srvs[0].URL()}, nil)
	eventually(t, "registered", func() (bool, string) { return ta.a.Registered() && fc.node("w1") != nil, "" })
	statusPatches := func() int {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		n := 0
		for _, p := range fc.patches {
			if strings.Contains(p, "/status ") {
				n++
			}
		}
		return n
	}
	// The first ticks may post what registration left to post.
	time.Sleep(2 * ta.cfg.StatusReportInterval)
	before := statusPatches()
	const window = 4500 * time.Millisecond
	time.Sleep(window)
	posts := statusPatches() - before
	ticks := int(window / ta.cfg.StatusUpdateInterval)
	reports := int(window / ta.cfg.StatusReportInterval)
	t.Logf("%d status posts in %s (%d update ticks, report interval %s)", posts, window, ticks, ta.cfg.StatusReportInterval)
	if posts < reports/2 || posts > reports+2 {
		t.Errorf("%d status posts in %s, want about %d (one per report interval), far from the %d ticks", posts, window, reports, ticks)
	}
	if n := fc.node("w1"); readyOf(n) != corev1.ConditionTrue {
		t.Errorf("node not Ready: %+v", n.Status.Conditions)
	}
}
