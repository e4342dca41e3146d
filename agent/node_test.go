package agent

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/api/v1alpha1"
)

func TestSelfSettableLabel(t *testing.T) {
	tests := map[string]bool{
		"rack":                             true,
		"example.com/rack":                 true,
		"kubernetes.io/hostname":           true,
		"kubernetes.io/os":                 true,
		"beta.kubernetes.io/arch":          true,
		"topology.kubernetes.io/zone":      true,
		"node.kubernetes.io/instance-type": true,
		"node.kubernetes.io/exclude-from-external-load-balancers": true,
		"kubelet.kubernetes.io/anything":                          true,
		"sub.node.kubernetes.io/x":                                true,
		"node-role.kubernetes.io/control-plane":                   false,
		"node-role.kubernetes.io/worker":                          false,
		"kubernetes.io/role":                                      false,
		"k8s.io/x":                                                false,
		"example.k8s.io/x":                                        false,
		"node-restriction.kubernetes.io/pool":                     false,
		"team.node-restriction.kubernetes.io/pool":                false,
	}
	for key, want := range tests {
		if got := SelfSettableLabel(key); got != want {
			t.Errorf("SelfSettableLabel(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestLabelsAndTaints(t *testing.T) {
	withRuntime := &Facts{RuntimeEndpoint: "/run/containerd/containerd.sock"}
	without := &Facts{}
	tests := []struct {
		name       string
		cfg        Config
		facts      *Facts
		own, admin map[string]string
		taints     []string
	}{
		{
			name:   "worker without a runtime",
			cfg:    Config{NodeName: "w1", Role: v1alpha1.RoleWorker, Labels: map[string]string{"example.com/rack": "r1", "node-role.kubernetes.io/gpu": ""}},
			facts:  without,
			own:    map[string]string{"kubernetes.io/hostname": "w1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "example.com/rack": "r1"},
			admin:  map[string]string{"node-role.kubernetes.io/gpu": ""},
			taints: []string{"node.anvil.dev/no-runtime:NoSchedule"},
		},
		{
			name:   "master with a runtime and its own taint",
			cfg:    Config{NodeName: "m1", Role: v1alpha1.RoleMaster, Taints: []v1alpha1.Taint{{Key: "dedicated", Value: "cp", Effect: v1alpha1.NoExecute}, {Key: ControlPlaneRoleKey, Effect: v1alpha1.NoSchedule}}},
			facts:  withRuntime,
			own:    map[string]string{"kubernetes.io/hostname": "m1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", ExcludeFromLBLabel: ""},
			admin:  map[string]string{ControlPlaneRoleKey: ""},
			taints: []string{"dedicated:NoExecute", ControlPlaneRoleKey + ":NoSchedule"},
		},
		{
			name:   "master without a runtime",
			cfg:    Config{NodeName: "m1", Role: v1alpha1.RoleMaster},
			facts:  without,
			own:    map[string]string{"kubernetes.io/hostname": "m1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", ExcludeFromLBLabel: ""},
			admin:  map[string]string{ControlPlaneRoleKey: ""},
			taints: []string{ControlPlaneRoleKey + ":NoSchedule", NoRuntimeTaintKey + ":NoSchedule"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.own["kubernetes.io/arch"] != "" {
				tt.own["kubernetes.io/arch"] = ownLabels(&tt.cfg)["kubernetes.io/arch"]
			}
			if got := ownLabels(&tt.cfg); !reflect.DeepEqual(got, tt.own) {
				t.Errorf("own labels %v, want %v", got, tt.own)
			}
			if got := AdminLabels(&tt.cfg); !reflect.DeepEqual(got, tt.admin) {
				t.Errorf("admin labels %v, want %v", got, tt.admin)
			}
			if got := taintKeys(wantTaints(&tt.cfg, tt.facts)); !reflect.DeepEqual(got, tt.taints) {
				t.Errorf("taints %v, want %v", got, tt.taints)
			}
		})
	}
}

func testFacts() *Facts {
	return &Facts{
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")},
		CPUs:      4, MemoryBytes: 8 << 30, MemAvailableBytes: 6 << 30,
		HugePages:    map[string]int64{"hugepages-2Mi": 512 << 20},
		StorageBytes: 100 << 30, StorageAvailableBytes: 60 << 30,
		PIDs: 300, PIDMax: 32768,
		MachineID: "m", BootID: "b", KernelVersion: "6.1", OSImage: "Debian", OS: "linux", Architecture: "amd64",
	}
}

func testConfig() *Config {
	c := &Config{NodeName: "w1", Servers: []string{"https://10.0.0.1:6443"}}
	c.Default()
	return c
}

func condition(st corev1.NodeStatus, t corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.NodeCondition{}
}

func TestBuildStatus(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	st := buildStatus(statusInput{cfg: testConfig(), facts: testFacts(), pressure: pressure{}, now: now})
	q := func(s string) resource.Quantity { return resource.MustParse(s) }
	for name, want := range map[corev1.ResourceName]resource.Quantity{
		corev1.ResourceCPU: q("4"), corev1.ResourceMemory: q("8Gi"), corev1.ResourcePods: q("110"),
		corev1.ResourceEphemeralStorage: q("100Gi"), "hugepages-2Mi": q("512Mi"),
	} {
		if got := st.Capacity[name]; got.Cmp(want) != 0 {
			t.Errorf("capacity %s = %s, want %s", name, got.String(), want.String())
		}
	}
	// Allocatable: memory less the eviction threshold and huge pages,
	// storage less 10%.
	if got := st.Allocatable[corev1.ResourceMemory]; got.Cmp(q("7580Mi")) != 0 {
		t.Errorf("allocatable memory %s, want 7580Mi", got.String())
	}
	if got := st.Allocatable[corev1.ResourceEphemeralStorage]; got.Cmp(*resource.NewQuantity((100<<30)*9/10, resource.BinarySI)) != 0 {
		t.Errorf("allocatable storage %s", got.String())
	}
	if got := st.Allocatable[corev1.ResourcePods]; got.Value() != 110 {
		t.Errorf("allocatable pods %s", got.String())
	}
	wantAddrs := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.5"}, {Type: corev1.NodeInternalIP, Address: "fd00::5"}, {Type: corev1.NodeHostName, Address: "w1"}}
	if !reflect.DeepEqual(st.Addresses, wantAddrs) {
		t.Errorf("addresses %v", st.Addresses)
	}
	var types []string
	for _, c := range st.Conditions {
		types = append(types, string(c.Type)+"="+string(c.Status))
	}
	if strings.Join(types, " ") != "MemoryPressure=False DiskPressure=False PIDPressure=False Ready=True" {
		t.Errorf("conditions %v", types)
	}
	if st.NodeInfo.KubeletVersion == "" || st.NodeInfo.ContainerRuntimeVersion != "" || st.NodeInfo.BootID != "b" {
		t.Errorf("node info %+v", st.NodeInfo)
	}
}

func TestConditionTransitions(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	cfg, f := testConfig(), testFacts()
	pr := pressure{}
	first := buildStatus(statusInput{cfg: cfg, facts: f, pressure: pr, now: t0})
	prev := &corev1.Node{Status: first}

	// Unchanged ten seconds later: same transition time, newer heartbeat.
	t1 := t0.Add(10 * time.Second)
	second := buildStatus(statusInput{cfg: cfg, facts: f, prev: prev, pressure: pr, now: t1})
	ready := condition(second, corev1.NodeReady)
	if !ready.LastTransitionTime.Time.Equal(t0) || !ready.LastHeartbeatTime.Time.Equal(t1) {
		t.Errorf("Ready times %v / %v", ready.LastTransitionTime, ready.LastHeartbeatTime)
	}
	if !sameStatus(&first, &second) {
		t.Error("a heartbeat alone counts as a change")
	}

	// The controller marked it Unknown: Ready=True again is a transition.
	unknown := prev.DeepCopy()
	for i := range unknown.Status.Conditions {
		unknown.Status.Conditions[i].Status = corev1.ConditionUnknown
	}
	third := buildStatus(statusInput{cfg: cfg, facts: f, prev: unknown, pressure: pr, now: t1})
	if c := condition(third, corev1.NodeReady); !c.LastTransitionTime.Time.Equal(t1) {
		t.Errorf("Ready after Unknown: transition %v, want %v", c.LastTransitionTime, t1)
	}

	// Memory pressure: True at once, and False only after the transition
	// period without pressure.
	low := *f
	low.MemAvailableBytes = 50 << 20
	st := buildStatus(statusInput{cfg: cfg, facts: &low, prev: prev, pressure: pr, now: t1})
	if c := condition(st, corev1.NodeMemoryPressure); c.Status != corev1.ConditionTrue {
		t.Errorf("memory pressure %s with 50Mi available", c.Status)
	}
	if sameStatus(&st, &second) {
		t.Error("a pressure condition change is not a change")
	}
	st = buildStatus(statusInput{cfg: cfg, facts: f, prev: prev, pressure: pr, now: t1.Add(time.Minute)})
	if c := condition(st, corev1.NodeMemoryPressure); c.Status != corev1.ConditionTrue {
		t.Errorf("memory pressure dropped a minute after it was seen")
	}
	st = buildStatus(statusInput{cfg: cfg, facts: f, prev: prev, pressure: pr, now: t1.Add(pressureTransition + time.Second)})
	if c := condition(st, corev1.NodeMemoryPressure); c.Status != corev1.ConditionFalse {
		t.Errorf("memory pressure still %s after the transition period", c.Status)
	}

	// Disk and PID pressure.
	full := *f
	full.StorageAvailableBytes, full.PIDs = 5<<30, 32000
	st = buildStatus(statusInput{cfg: cfg, facts: &full, pressure: pressure{}, now: t1})
	if condition(st, corev1.NodeDiskPressure).Status != corev1.ConditionTrue || condition(st, corev1.NodePIDPressure).Status != corev1.ConditionTrue {
		t.Errorf("disk 5%% free, 98%% of PIDs used: %v", st.Conditions)
	}
}

func TestStatusPatch(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	cfg, f := testConfig(), testFacts()
	st := buildStatus(statusInput{cfg: cfg, facts: f, pressure: pressure{}, now: now})
	decode := func(b []byte) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m["status"].(map[string]any)
	}

	// First post (nothing known about the server's copy): everything.
	b, err := statusPatch(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	full := decode(b)
	for _, k := range []string{"conditions", "addresses", "capacity", "allocatable", "nodeInfo"} {
		if _, ok := full[k]; !ok {
			t.Errorf("first patch lacks %s: %s", k, b)
		}
	}
	if addrs := full["addresses"].([]any); addrs[0].(map[string]any)["$patch"] != "replace" {
		t.Errorf("addresses are merged by type, not replaced: %v", addrs)
	}

	// The server has it all: only the conditions (the heartbeat).
	prev := &corev1.Node{Status: st}
	b, _ = statusPatch(st, prev)
	if got := decode(b); len(got) != 1 || got["conditions"] == nil {
		t.Errorf("unchanged status patch: %s", b)
	}

	// Huge pages went away, an extended resource stays: delete only ours.
	prev = &corev1.Node{Status: *st.DeepCopy()}
	prev.Status.Capacity["example.com/gpu"] = resource.MustParse("2")
	f2 := *f
	f2.HugePages = nil
	st2 := buildStatus(statusInput{cfg: cfg, facts: &f2, pressure: pressure{}, now: now})
	b, _ = statusPatch(st2, prev)
	capPatch := decode(b)["capacity"].(map[string]any)
	if v, ok := capPatch["hugepages-2Mi"]; !ok || v != nil {
		t.Errorf("capacity patch %v: want hugepages-2Mi deleted", capPatch)
	}
	if _, ok := capPatch["example.com/gpu"]; ok {
		t.Errorf("capacity patch %v touches an extended resource", capPatch)
	}
}

func TestMetadataPatch(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Labels:      map[string]string{"kubernetes.io/hostname": "w1", ControlPlaneRoleKey: "", "example.com/rack": "r1"},
		Annotations: map[string]string{InterfacesAnnotation: "[]"},
	}}
	b, err := metadataPatch(n, map[string]string{"kubernetes.io/hostname": "w1", "example.com/rack": "r1"}, map[string]string{InterfacesAnnotation: "[]"})
	if err != nil || b != nil {
		t.Fatalf("nothing to change, got %s %v", b, err)
	}
	b, _ = metadataPatch(n, map[string]string{"kubernetes.io/hostname": "w1", "example.com/rack": "r2"}, map[string]string{InterfacesAnnotation: `[{"name":"eth0"}]`})
	want := `{"metadata":{"annotations":{"node.anvil.dev/interfaces":"[{\"name\":\"eth0\"}]"},"labels":{"example.com/rack":"r2"}}}`
	if string(b) != want {
		t.Errorf("patch %s\nwant  %s", b, want)
	}
	if strings.Contains(string(b), ControlPlaneRoleKey) {
		t.Error("the patch touches an administrator's label")
	}
}

func TestMissingTaints(t *testing.T) {
	n := &corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "a", Effect: corev1.TaintEffectNoSchedule}}}}
	got := missingTaints(n, []corev1.Taint{{Key: "a", Effect: corev1.TaintEffectNoSchedule}, {Key: NoRuntimeTaintKey, Effect: corev1.TaintEffectNoSchedule}})
	if len(got) != 1 || got[0].Key != NoRuntimeTaintKey {
		t.Errorf("missing %v", got)
	}
}

func TestServerReady(t *testing.T) {
	for _, tt := range []struct {
		conds []corev1.NodeCondition
		want  bool
	}{
		{nil, false},
		{[]corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}, true},
		{[]corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}, false},
	} {
		if got := serverReady(&corev1.Node{Status: corev1.NodeStatus{Conditions: tt.conds}}); got != tt.want {
			t.Errorf("serverReady(%v) = %v", tt.conds, got)
		}
	}
}
