package master

import (
	"net/netip"
	"path"
	"slices"
	"strings"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/node"
)

// referencePlan is a master of a cluster with every optional component
// turned on (a VIP, a backup schedule): its declarations name everything
// anvil can run on a machine, so what reset removes and what preflight
// checks is read off the declarations instead of kept in lists beside them.
func referencePlan() Plan {
	c := &v1alpha1.Cluster{
		Name:         "reference",
		ControlPlane: v1alpha1.ControlPlane{VIP: netip.MustParseAddr("192.0.2.100")},
		Hosts:        []v1alpha1.Host{{Name: "m", Address: netip.MustParseAddr("192.0.2.1"), Role: v1alpha1.RoleMaster}},
		Backup:       v1alpha1.Backup{Schedule: "daily"},
	}
	c.Default()
	p, err := NewPlan(c, "m", "")
	if err != nil {
		panic("master: the reference plan does not complete: " + err.Error())
	}
	return p
}

// OwnedUnits names every systemd unit anvil can write on a machine, in
// start order.
func OwnedUnits() []string {
	p := referencePlan()
	cs, err := NodeComponents(p, v1alpha1.LayoutSystemd)
	if err != nil {
		panic("master: the reference components do not render: " + err.Error())
	}
	var out []string
	for _, c := range cs {
		out = append(out, c.UnitName())
	}
	for _, j := range []component.ScheduledJob{backupJob(p), renewJob(p)} {
		timers, err := component.TimerUnits(j)
		if err != nil {
			panic("master: the reference timer " + j.Name + " does not render: " + err.Error())
		}
		for _, f := range timers {
			out = append(out, path.Base(f.Path))
		}
	}
	return out
}

// OwnedStaticPods names every static pod anvil can write (the control
// plane's manifests, without ".yaml").
func OwnedStaticPods() []string {
	cs, err := Components(referencePlan())
	if err != nil {
		panic("master: the reference components do not render: " + err.Error())
	}
	var out []string
	for _, c := range cs {
		out = append(out, strings.TrimSuffix(c.Name, ".yaml"))
	}
	return out
}

// Listener is a port a node's component listens on, as its declaration says.
type Listener struct {
	Component string
	// Name is the port's name in the declaration ("client", "peer").
	Name string
	// Address is the address it binds; empty means every address.
	Address string
	Port    uint16
}

// NodePorts lists the ports p's node listens on in layout, read off its
// component declarations: what preflight and the installer's validation
// need free.
func NodePorts(p Plan, l v1alpha1.Layout) ([]Listener, error) {
	cs, err := NodeComponents(p, l)
	if err != nil {
		return nil, err
	}
	var out []Listener
	for _, c := range cs {
		for _, port := range c.Ports {
			out = append(out, Listener{Component: c.Name, Name: port.Name, Address: port.Address, Port: port.Number})
		}
	}
	return out, nil
}

// OwnedPrograms names the programs anvil runs on a machine, as the kernel
// shows them (the executable's base name).
func OwnedPrograms() []string {
	cs, err := NodeComponents(referencePlan(), v1alpha1.LayoutSystemd)
	if err != nil {
		panic("master: the reference components do not render: " + err.Error())
	}
	var out []string
	for _, c := range cs {
		if b := path.Base(c.Binary); !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out
}

// OwnedNodeStack is the node stack's declarations (containerd, then the
// kubelet) of the reference plan: the units and programs reset stops,
// read off package node's declarations.
func OwnedNodeStack() []component.Spec {
	p := referencePlan()
	cs, err := node.Components(node.Plan{Cluster: p.Cluster, Host: p.Node})
	if err != nil {
		panic("master: the reference node stack does not render: " + err.Error())
	}
	return cs
}
