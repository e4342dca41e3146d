package agent

import (
	"encoding/json"
	"runtime"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/buildinfo"
)

// Labels, taints and annotations anvil puts on Nodes.
const (
	// NoRuntimeTaintKey marks a node without a container runtime socket:
	// NoSchedule, so the scheduler places no pod where nothing can run it.
	NoRuntimeTaintKey = "node.anvil.dev/no-runtime"
	// ControlPlaneRoleKey is kubeadm's control-plane label and taint key.
	ControlPlaneRoleKey = "node-role.kubernetes.io/control-plane"
	// ExcludeFromLBLabel keeps masters out of external load balancers, as
	// kubeadm does; being in node.kubernetes.io, a node may set it itself.
	ExcludeFromLBLabel = "node.kubernetes.io/exclude-from-external-load-balancers"
	// InterfacesAnnotation lists the node's interfaces (JSON).
	InterfacesAnnotation = "node.anvil.dev/interfaces"
	// AgentVersionAnnotation is the version of the agent on the node.
	AgentVersionAnnotation = "node.anvil.dev/agent-version"
)

// Thresholds of the pressure conditions: the kubelet's default hard
// eviction thresholds (memory.available<100Mi, nodefs.available<10%), and
// 5% of pid_max for PIDs.
const (
	memoryEvictionThreshold = 100 << 20
	storageEvictionPercent  = 10
	pidPressurePercent      = 5
	// pressureTransition is how long a pressure condition stays True after
	// the pressure was last seen, so it does not flap (the kubelet's
	// eviction-pressure-transition-period).
	pressureTransition = 5 * time.Minute
)

// SelfSettableLabel reports whether NodeRestriction lets a node set the
// label key on its own Node: anything outside kubernetes.io and k8s.io, and
// inside them only the kubelet's labels (hostname, os, arch, instance type,
// topology) and the kubelet.kubernetes.io and node.kubernetes.io
// namespaces; never node-restriction.kubernetes.io.
func SelfSettableLabel(key string) bool {
	ns, _, ok := strings.Cut(key, "/")
	if !ok {
		return true
	}
	under := func(domain string) bool { return ns == domain || strings.HasSuffix(ns, "."+domain) }
	if under(corev1.LabelNamespaceNodeRestriction) {
		return false
	}
	if !under("kubernetes.io") && !under("k8s.io") {
		return true
	}
	switch key {
	case corev1.LabelHostname, corev1.LabelTopologyZone, corev1.LabelTopologyRegion,
		corev1.LabelFailureDomainBetaZone, corev1.LabelFailureDomainBetaRegion,
		corev1.LabelInstanceType, corev1.LabelInstanceTypeStable,
		corev1.LabelOSStable, corev1.LabelArchStable,
		"beta.kubernetes.io/os", "beta.kubernetes.io/arch":
		return true
	}
	return under(corev1.LabelNamespaceSuffixKubelet) || under(corev1.LabelNamespaceSuffixNode)
}

// RoleLabels are the labels of a role that only an administrator may set:
// node-role.kubernetes.io/control-plane on masters.
func RoleLabels(role v1alpha1.Role) map[string]string {
	if role == v1alpha1.RoleMaster {
		return map[string]string{ControlPlaneRoleKey: ""}
	}
	return map[string]string{}
}

// AdminLabels are the labels the Node of cfg should carry that the agent
// may not set itself (role labels and any kubernetes.io label outside the
// kubelet's set): `anvil init`, `anvil join --control-plane` and `anvil
// cluster apply` apply them with administrator credentials once the Node
// exists.
func AdminLabels(cfg *Config) map[string]string {
	out := RoleLabels(cfg.Role)
	for k, v := range cfg.Labels {
		if !SelfSettableLabel(k) {
			out[k] = v
		}
	}
	return out
}

// ownLabels are the labels the agent sets and keeps on its Node.
func ownLabels(cfg *Config) map[string]string {
	out := map[string]string{
		corev1.LabelHostname:   cfg.NodeName,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: runtime.GOARCH,
	}
	if cfg.Role == v1alpha1.RoleMaster {
		out[ExcludeFromLBLabel] = ""
	}
	for k, v := range cfg.Labels {
		if SelfSettableLabel(k) {
			out[k] = v
		}
	}
	return out
}

// wantTaints are the taints the Node is registered with.
func wantTaints(cfg *Config, f *Facts) []corev1.Taint {
	var out []corev1.Taint
	for _, t := range cfg.Taints {
		out = append(out, corev1.Taint{Key: t.Key, Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
	}
	add := func(t corev1.Taint) {
		if !slices.ContainsFunc(out, func(o corev1.Taint) bool { return o.Key == t.Key && o.Effect == t.Effect }) {
			out = append(out, t)
		}
	}
	if cfg.Role == v1alpha1.RoleMaster {
		add(corev1.Taint{Key: ControlPlaneRoleKey, Effect: corev1.TaintEffectNoSchedule})
	}
	if f.RuntimeEndpoint == "" {
		add(corev1.Taint{Key: NoRuntimeTaintKey, Effect: corev1.TaintEffectNoSchedule})
	}
	return out
}

// ownAnnotations are the annotations the agent keeps on its Node.
func ownAnnotations(f *Facts) map[string]string {
	b, _ := json.Marshal(f.Interfaces)
	return map[string]string{
		InterfacesAnnotation:   string(b),
		AgentVersionAnnotation: buildinfo.Version(),
	}
}

// newNode is the Node as the agent registers it.
func newNode(cfg *Config, f *Facts, st corev1.NodeStatus) *corev1.Node {
	return &corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        cfg.NodeName,
			Labels:      ownLabels(cfg),
			Annotations: ownAnnotations(f),
		},
		Spec:   corev1.NodeSpec{Taints: wantTaints(cfg, f)},
		Status: st,
	}
}

// pressure remembers when each pressure was last seen.
type pressure map[corev1.NodeConditionType]time.Time

// statusInput is what one status computation needs.
type statusInput struct {
	cfg   *Config
	facts *Facts
	// prev is the Node as the apiserver last showed it (nil before
	// registration); transition times are kept from it.
	prev     *corev1.Node
	pressure pressure
	now      time.Time
}

// buildStatus computes the NodeStatus the kubelet's contract asks for:
// capacity and allocatable (with a pods count the scheduler places by),
// the four conditions with Ready last, addresses, and node info.
func buildStatus(in statusInput) corev1.NodeStatus {
	f, cfg := in.facts, in.cfg
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(f.CPUs, resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(f.MemoryBytes, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(int64(cfg.MaxPods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(f.StorageBytes, resource.BinarySI),
	}
	var hugeTotal int64
	for name, b := range f.HugePages {
		capacity[corev1.ResourceName(name)] = *resource.NewQuantity(b, resource.BinarySI)
		hugeTotal += b
	}
	allocatable := capacity.DeepCopy()
	allocatable[corev1.ResourceMemory] = *resource.NewQuantity(max(0, f.MemoryBytes-memoryEvictionThreshold-hugeTotal), resource.BinarySI)
	allocatable[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(f.StorageBytes-f.StorageBytes*storageEvictionPercent/100, resource.BinarySI)

	var addrs []corev1.NodeAddress
	for _, a := range f.Addresses {
		addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: cfg.NodeName})

	runtimeVersion := ""
	if f.RuntimeEndpoint != "" {
		runtimeVersion = runtimeName(f.RuntimeEndpoint) + "://"
	}
	memPressure := f.MemAvailableBytes < memoryEvictionThreshold
	diskPressure := f.StorageBytes > 0 && f.StorageAvailableBytes*100 < f.StorageBytes*storageEvictionPercent
	pidPressure := f.PIDMax > 0 && (f.PIDMax-f.PIDs)*100 < f.PIDMax*pidPressurePercent
	conds := []corev1.NodeCondition{
		in.pressureCondition(corev1.NodeMemoryPressure, memPressure,
			"AgentHasSufficientMemory", "available memory is above the eviction threshold",
			"AgentHasInsufficientMemory", "available memory is below the eviction threshold"),
		in.pressureCondition(corev1.NodeDiskPressure, diskPressure,
			"AgentHasNoDiskPressure", "ephemeral storage has room",
			"AgentHasDiskPressure", "ephemeral storage is over 90% full"),
		in.pressureCondition(corev1.NodePIDPressure, pidPressure,
			"AgentHasSufficientPID", "process IDs are available",
			"AgentHasInsufficientPID", "over 95% of process IDs are in use"),
		in.condition(corev1.NodeReady, corev1.ConditionTrue, "AgentReady", "anvil agent is posting ready status"),
	}
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: allocatable,
		Conditions:  conds,
		Addresses:   addrs,
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               f.MachineID,
			SystemUUID:              f.SystemUUID,
			BootID:                  f.BootID,
			KernelVersion:           f.KernelVersion,
			OSImage:                 f.OSImage,
			ContainerRuntimeVersion: runtimeVersion,
			KubeletVersion:          images.DefaultVersion + "+anvil",
			OperatingSystem:         f.OS,
			Architecture:            f.Architecture,
		},
	}
}

func (in statusInput) pressureCondition(t corev1.NodeConditionType, seen bool, okReason, okMsg, badReason, badMsg string) corev1.NodeCondition {
	if seen {
		in.pressure[t] = in.now
	}
	if last, ok := in.pressure[t]; ok && in.now.Sub(last) < pressureTransition {
		return in.condition(t, corev1.ConditionTrue, badReason, badMsg)
	}
	return in.condition(t, corev1.ConditionFalse, okReason, okMsg)
}

// condition keeps the transition time the server has when the status does
// not change.
func (in statusInput) condition(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
	now := metav1.NewTime(in.now.Truncate(time.Second))
	c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	if in.prev != nil {
		for _, p := range in.prev.Status.Conditions {
			if p.Type == t && p.Status == s && !p.LastTransitionTime.IsZero() {
				c.LastTransitionTime = p.LastTransitionTime
			}
		}
	}
	return c
}

// sameStatus compares two statuses ignoring heartbeat times, the test of
// "something changed" that makes the agent post before the report
// interval is up.
func sameStatus(a, b *corev1.NodeStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	strip := func(s *corev1.NodeStatus) corev1.NodeStatus {
		c := *s.DeepCopy()
		for i := range c.Conditions {
			c.Conditions[i].LastHeartbeatTime = metav1.Time{}
		}
		return c
	}
	return apiequality.Semantic.DeepEqual(strip(a), strip(b))
}

// serverReady reports whether the Node as the server has it says Ready
// with the agent's own reason (not Unknown, as the node lifecycle
// controller writes when heartbeats stopped).
func serverReady(n *corev1.Node) bool {
	if n == nil {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// statusPatch is a strategic merge patch of nodes/NAME/status with what
// differs from prev (the Node as the server has it) — as the kubelet's
// two-way merge patch, mostly just the conditions' heartbeat. Conditions
// merge by type (conditions others own survive); addresses are replaced
// whole (their merge key, type, is not unique); resources that went away
// are deleted.
func statusPatch(st corev1.NodeStatus, prev *corev1.Node) ([]byte, error) {
	var had corev1.NodeStatus
	if prev != nil {
		had = prev.Status
	}
	status := map[string]any{"conditions": st.Conditions}
	if !apiequality.Semantic.DeepEqual(st.Addresses, had.Addresses) {
		addrs := []any{map[string]string{"$patch": "replace"}}
		for _, a := range st.Addresses {
			addrs = append(addrs, a)
		}
		status["addresses"] = addrs
	}
	resources := func(key string, want, had corev1.ResourceList) {
		out := map[string]any{}
		for k, v := range want {
			if h, ok := had[k]; !ok || h.Cmp(v) != 0 {
				out[string(k)] = v
			}
		}
		for k := range had {
			if _, ok := want[k]; !ok && isOwnResource(k) {
				out[string(k)] = nil
			}
		}
		if len(out) > 0 {
			status[key] = out
		}
	}
	resources("capacity", st.Capacity, had.Capacity)
	resources("allocatable", st.Allocatable, had.Allocatable)
	if !apiequality.Semantic.DeepEqual(st.NodeInfo, had.NodeInfo) {
		status["nodeInfo"] = st.NodeInfo
	}
	return json.Marshal(map[string]any{"status": status})
}

// isOwnResource says whether the agent reports resource k (extended
// resources belong to device plugins).
func isOwnResource(k corev1.ResourceName) bool {
	switch k {
	case corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods, corev1.ResourceEphemeralStorage:
		return true
	}
	return strings.HasPrefix(string(k), corev1.ResourceHugePagesPrefix)
}

// metadataPatch is a merge patch of the agent's own labels and annotations
// that differ on n, or nil when none does. It never removes a label: an
// administrator's labels (roles) must stay, and NodeRestriction forbids a
// node to touch them anyway.
func metadataPatch(n *corev1.Node, labels, annotations map[string]string) ([]byte, error) {
	diff := func(have, want map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range want {
			if cur, ok := have[k]; !ok || cur != v {
				out[k] = v
			}
		}
		return out
	}
	l, a := diff(n.Labels, labels), diff(n.Annotations, annotations)
	if len(l) == 0 && len(a) == 0 {
		return nil, nil
	}
	meta := map[string]any{}
	if len(l) > 0 {
		meta["labels"] = l
	}
	if len(a) > 0 {
		meta["annotations"] = a
	}
	return json.Marshal(map[string]any{"metadata": meta})
}

// missingTaints are the taints the agent would register with that the
// existing Node lacks; a node may not add them itself after registration.
func missingTaints(n *corev1.Node, want []corev1.Taint) []corev1.Taint {
	var out []corev1.Taint
	for _, t := range want {
		if !slices.ContainsFunc(n.Spec.Taints, func(o corev1.Taint) bool { return o.Key == t.Key && o.Effect == t.Effect }) {
			out = append(out, t)
		}
	}
	return out
}
