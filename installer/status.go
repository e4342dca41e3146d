package installer

import (
	"context"
	"fmt"
	"strings"

	"anvil.dev/anvil/addons"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// statusPhases is `anvil cluster status`: read-only, every host looked at
// whatever happens on the others.
func statusPhases() []flowPhase {
	return []flowPhase{
		looking("connect", planConnect), // connect.go
		looking("facts", planFacts),     // facts.go, with `anvil status -o json`
	}
}

// ClusterStatus is what `anvil cluster status` reports.
type ClusterStatus struct {
	Name     string       `json:"name"`
	Endpoint string       `json:"endpoint"`
	Hosts    []HostStatus `json:"hosts"`
	// AddOns are the cluster add-ons anvil deploys (cluster DNS), as the
	// cluster reports them; empty when the API could not be asked.
	AddOns []AddOnStatus `json:"addOns,omitempty"`
	// Healthy is true when every host is reachable and healthy, and every
	// add-on has its replicas ready.
	Healthy bool `json:"healthy"`
}

// AddOnStatus is an add-on's Deployment: replicas ready of those wanted.
type AddOnStatus struct {
	Name    string `json:"name"`
	Ready   int32  `json:"ready"`
	Desired int32  `json:"desired"`
	Healthy bool   `json:"healthy"`
	Problem string `json:"problem,omitempty"`
}

// HostStatus is one host.
type HostStatus struct {
	Name      string        `json:"name"`
	Role      v1alpha1.Role `json:"role"`
	Address   string        `json:"address"`
	Reachable bool          `json:"reachable"`
	// Error is why the host could not be looked at.
	Error string `json:"error,omitempty"`
	OS    string `json:"os,omitempty"`
	Arch  string `json:"arch,omitempty"`
	// Anvil is the installed anvil of the cluster's Kubernetes version.
	Anvil *AnvilInstall `json:"anvil,omitempty"`
	// Member is true once init or join completed on the host.
	Member     bool              `json:"member"`
	Layout     v1alpha1.Layout   `json:"layout,omitempty"`
	Components []ComponentHealth `json:"components,omitempty"`
	Node       *NodeHealth       `json:"node,omitempty"`
	// Etcd is the host's etcd membership (masters).
	Etcd    *EtcdMembership `json:"etcd,omitempty"`
	Healthy bool            `json:"healthy"`
	// Problems say what is not healthy.
	Problems []string `json:"problems,omitempty"`
	// Warnings are what will fail if left alone, not failing yet: a CA
	// close to its end.
	Warnings []string `json:"warnings,omitempty"`
}

// AnvilInstall is anvil as installed on a host.
type AnvilInstall struct {
	Version string `json:"version,omitempty"`
	SHA256  string `json:"sha256"`
}

// ComponentHealth is one component on a host.
type ComponentHealth struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
	Problem string `json:"problem,omitempty"`
}

// NodeHealth is the host's Node as the cluster sees it.
type NodeHealth struct {
	Registered bool   `json:"registered"`
	Ready      bool   `json:"ready"`
	Reason     string `json:"reason,omitempty"`
}

// EtcdMembership is a master's place in etcd.
type EtcdMembership struct {
	Member  bool   `json:"member"`
	ID      string `json:"id,omitempty"`
	Learner bool   `json:"learner,omitempty"`
	Leader  bool   `json:"leader,omitempty"`
}

// Status looks at every host of the cluster in o. Unreachable hosts are
// part of the answer, not an error.
func Status(ctx context.Context, o Options) (*ClusterStatus, error) {
	r, err := newRun(o)
	if err != nil {
		return nil, err
	}
	defer r.close()
	r.factsReq = factsRequest{version: r.cluster.KubernetesVersion, status: true}
	if err := r.do(ctx, "status", statusPhases()); ctx.Err() != nil {
		return nil, err
	}
	for _, h := range r.hosts {
		if h.IsMaster() && !h.failed() && h.facts.ControlPlane() {
			r.primary = h
			break
		}
	}
	var nodes map[string]nodeState
	var nodesErr error
	var addOns []AddOnStatus
	if acc, err := r.access(ctx); err == nil {
		nodes, nodesErr = acc.nodeStates(ctx)
		addOns = addOnStatus(ctx, acc.client, r.cluster)
	} else {
		nodesErr = err
	}
	var etcd []etcdMember // nil: unknown
	if r.primary != nil && r.primary.facts.Status != nil && r.primary.facts.Status.Etcd != nil {
		for _, m := range r.primary.facts.Status.Etcd.Members {
			etcd = append(etcd, etcdMember{name: m.Name, id: m.ID, learner: m.Learner, leader: m.Leader})
		}
	}
	st := &ClusterStatus{Name: r.cluster.Name, Endpoint: r.cluster.APIServerURL(), AddOns: addOns, Healthy: true}
	for _, a := range addOns {
		st.Healthy = st.Healthy && a.Healthy
	}
	for _, h := range r.hosts {
		hs := hostStatus(h, nodes, nodesErr, etcd)
		st.Healthy = st.Healthy && hs.Healthy
		st.Hosts = append(st.Hosts, hs)
	}
	return st, nil
}

type etcdMember struct {
	name, id        string
	learner, leader bool
}

func hostStatus(h *host, nodes map[string]nodeState, nodesErr error, etcd []etcdMember) HostStatus {
	hs := HostStatus{Name: h.Name, Role: h.Role, Address: h.Address.String()}
	if h.failed() || h.facts == nil {
		if h.err != nil {
			hs.Error = h.err.Error()
		}
		hs.Problems = append(hs.Problems, "unreachable")
		return hs
	}
	f := h.facts
	hs.Reachable, hs.OS, hs.Arch = true, f.OS, f.Arch
	if sum, ok := f.Installed[images.AnvilBinary]; ok {
		hs.Anvil = &AnvilInstall{Version: f.AnvilVersion, SHA256: sum}
	}
	hs.Member = f.Member()
	if !hs.Member {
		hs.Problems = append(hs.Problems, "not a node: apply has not run here")
		return hs
	}
	if f.Node != nil {
		hs.Layout = f.Node.Layout
	}
	seen := map[string]bool{}
	if f.Status != nil {
		for _, c := range f.Status.Components {
			hs.Components = append(hs.Components, ComponentHealth{Name: c.Name, State: c.State, Healthy: c.Healthy, Problem: c.Problem})
			seen[c.Name] = true
			if !c.Healthy {
				hs.Problems = append(hs.Problems, c.Name+" is not healthy")
			}
		}
		if c := f.Status.Certificates; c != nil {
			hs.Warnings = c.Warnings
		}
	} else if f.StatusErr != "" {
		hs.Problems = append(hs.Problems, f.StatusErr)
	}
	// Units `anvil status` did not report (the agent, on workers).
	for _, u := range anvilUnits() {
		name := strings.TrimSuffix(u, ".service")
		state := f.Units[u]
		if seen[name] || seen[strings.TrimPrefix(name, "anvil-")] || state == "" || state == "inactive" {
			continue
		}
		hs.Components = append(hs.Components, ComponentHealth{Name: name, State: state, Healthy: state == "active"})
		if state != "active" {
			hs.Problems = append(hs.Problems, u+" is "+state)
		}
	}
	switch n, ok := nodes[h.Name]; {
	case !ok && !f.AgentUnit:
		hs.Problems = append(hs.Problems, "no Node: no node agent on this host")
	case nodesErr != nil:
		hs.Problems = append(hs.Problems, "Nodes unknown: "+nodesErr.Error())
	case !ok:
		hs.Node = &NodeHealth{}
		hs.Problems = append(hs.Problems, "no Node registered")
	default:
		hs.Node = &NodeHealth{Registered: true, Ready: n.Ready}
		if !n.Ready {
			hs.Node.Reason = n.Reason
			hs.Problems = append(hs.Problems, "Node not Ready: "+n.Reason)
		}
	}
	if h.IsMaster() && etcd != nil {
		hs.Etcd = &EtcdMembership{}
		for _, m := range etcd {
			if m.name == h.Name {
				hs.Etcd = &EtcdMembership{Member: true, ID: m.id, Learner: m.learner, Leader: m.leader}
			}
		}
		if !hs.Etcd.Member {
			hs.Problems = append(hs.Problems, "not an etcd member")
		}
	}
	hs.Healthy = len(hs.Problems) == 0
	return hs
}

// addOnStatus reads the Deployments of the add-ons c has (cluster DNS when
// a host runs pods).
func addOnStatus(ctx context.Context, cs kubernetes.Interface, c *v1alpha1.Cluster) []AddOnStatus {
	if !addons.WantsDNS(c.Defaulted()) {
		return nil
	}
	a := AddOnStatus{Name: addons.CoreDNSName, Desired: addons.CoreDNSReplicas}
	d, err := cs.AppsV1().Deployments(metav1.NamespaceSystem).Get(ctx, addons.CoreDNSName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		a.Problem = "not deployed: the first master's init applies it"
	case err != nil:
		a.Problem = err.Error()
	default:
		if d.Spec.Replicas != nil {
			a.Desired = *d.Spec.Replicas
		}
		a.Ready = d.Status.ReadyReplicas
		if a.Ready < a.Desired {
			a.Problem = fmt.Sprintf("%d of %d replicas ready", a.Ready, a.Desired)
		}
	}
	a.Healthy = a.Problem == ""
	return []AddOnStatus{a}
}
