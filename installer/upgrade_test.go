package installer

import (
	"context"
	"strings"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/node"
)

// TestPlanUpgrade: masters behind the file's version are upgraded one at
// a time, then the workers whose kubelet is behind; nothing is planned
// for a host at the version, and nothing runs while a master is down or
// behind.
func TestPlanUpgrade(t *testing.T) {
	const from, to = "v1.36.3", "v1.37.2"
	setup := func() (*run, []*host) {
		c, hs := fleet(t, 4)
		hs[1].Role, hs[1].Host.Role = v1alpha1.RoleMaster, v1alpha1.RoleMaster
		c.Hosts[1].Role = v1alpha1.RoleMaster
		c.KubernetesVersion = to
		for _, h := range hs[:2] {
			h.facts.Node = &master.NodeState{Node: h.Name, Role: v1alpha1.RoleMaster, KubernetesVersion: from}
		}
		hs[1].facts.Node.KubernetesVersion = to // finished before
		hs[2].facts.NodeStack = &node.StackState{KubernetesVersion: from}
		hs[3].facts.NodeStack = &node.StackState{KubernetesVersion: to}
		return &run{cluster: c, hosts: hs, apply: &applyState{}}, hs
	}
	r, hs := setup()
	pl := planUpgrade(r)
	if !pl.oneAtATime || len(pl.steps) != 1 || pl.steps[0].host != hs[0] || !strings.Contains(pl.steps[0].do, from+" → "+to) {
		t.Fatalf("masters: %+v", pl)
	}
	if !strings.Contains(pl.steps[0].do, "anvil upgrade --to "+to) || strings.Contains(pl.steps[0].do, "--rollback") {
		t.Errorf("master step: %s", pl.steps[0].do)
	}
	r.apply.upgraded.Store(hs[0].Name, true) // as the upgrade phase records it
	wl := planUpgradeWorkers(r)
	if len(wl.steps) != 1 || wl.steps[0].host != hs[2] || wl.concurrency != 1 || !strings.Contains(wl.steps[0].do, "drain w2") {
		t.Fatalf("workers: %+v", wl)
	}
	// A master down: nothing runs, and the master is named.
	r, hs = setup()
	hs[1].err = &HostError{Host: hs[1].Name, Phase: "connect"}
	if _, err := planUpgrade(r).steps[0].run(context.Background()); err == nil || !strings.Contains(err.Error(), "w1 cannot be reached") {
		t.Errorf("with a master down: %v", err)
	}
	// ... unless --force, which is passed on to anvil upgrade.
	r, hs = setup()
	r.apply.o.Force = true
	hs[1].err = &HostError{Host: hs[1].Name, Phase: "connect"}
	if do := planUpgrade(r).steps[0].do; !strings.Contains(do, "--force") {
		t.Errorf("with a master down and --force: %s", do)
	}
	// A master that failed its upgrade: no worker is switched, and each
	// says why.
	r, hs = setup()
	hs[0].err = &HostError{Host: hs[0].Name, Phase: "upgrade"}
	if s := planUpgradeWorkers(r).steps[0]; s.run != nil || !strings.Contains(s.do, "m1 do not run Kubernetes "+to) {
		t.Errorf("with a master behind: %+v", s)
	}
	// A master the run did not reach (an earlier one failed): the same.
	r, _ = setup()
	if s := planUpgradeWorkers(r).steps[0]; s.run != nil || !strings.Contains(s.do, "m1 do not run Kubernetes "+to) {
		t.Errorf("with a master not upgraded: %+v", s)
	}
	// A master and a worker whose switch did not finish are planned even
	// at the file's version: some of their components run the other.
	r, hs = setup()
	hs[1].facts.Node.UpgradingTo = from
	hs[3].facts.NodeStack.UpgradingTo = from
	if pl := planUpgrade(r); len(pl.steps) != 2 || !strings.Contains(pl.steps[1].do, "an unfinished switch to "+from) {
		t.Errorf("unfinished master: %+v", pl.steps)
	}
	r.apply.upgraded.Store(hs[0].Name, true)
	r.apply.upgraded.Store(hs[1].Name, true)
	if wl := planUpgradeWorkers(r); len(wl.steps) != 2 || wl.steps[1].run == nil {
		t.Errorf("unfinished worker: %+v", wl.steps)
	}
	// --rollback is passed on.
	r, _ = setup()
	r.apply.o.Rollback = true
	if do := planUpgrade(r).steps[0].do; !strings.Contains(do, "--rollback") {
		t.Errorf("rollback step: %s", do)
	}
}

// TestPlanAnvilRestart: a host at the file's version whose anvil the
// upload replaces, or whose status says a daemon still runs a replaced
// binary, has `anvil upgrade` restart them (a worker without a drain);
// the others are left alone.
func TestPlanAnvilRestart(t *testing.T) {
	const to = "v1.37.2"
	setup := func() (*run, []*host) {
		c, hs := fleet(t, 4)
		hs[1].Role, hs[1].Host.Role = v1alpha1.RoleMaster, v1alpha1.RoleMaster
		c.Hosts[1].Role = v1alpha1.RoleMaster
		c.KubernetesVersion = to
		for _, h := range hs {
			h.facts.Installed = map[string]string{images.AnvilBinary: "new"}
		}
		for _, h := range hs[:2] {
			h.facts.Node = &master.NodeState{Node: h.Name, Role: v1alpha1.RoleMaster, KubernetesVersion: to}
		}
		for _, h := range hs[2:] {
			h.facts.NodeStack = &node.StackState{KubernetesVersion: to}
		}
		b := &bundle{anvil: bundleFile{File: images.File{Name: images.AnvilBinary, SHA256: "new"}}}
		return &run{cluster: c, hosts: hs, apply: &applyState{bundle: b}}, hs
	}
	r, _ := setup()
	if pl, wl := planUpgrade(r), planUpgradeWorkers(r); len(pl.steps)+len(wl.steps) != 0 {
		t.Fatalf("nothing replaced, yet planned: %+v %+v", pl.steps, wl.steps)
	}

	r, hs := setup()
	hs[0].facts.Installed[images.AnvilBinary] = "old"                   // the upload replaces it
	hs[1].facts.Status = &master.Status{Replaced: []string{"approver"}} // an earlier apply did
	hs[3].facts.Installed[images.AnvilBinary] = "old"
	pl := planUpgrade(r)
	if !pl.oneAtATime || len(pl.steps) != 2 {
		t.Fatalf("masters: %+v", pl.steps)
	}
	for i, want := range []string{"the upload replaces anvil", "approver run a replaced binary"} {
		if s := pl.steps[i]; s.host != hs[i] || s.run == nil || !strings.Contains(s.do, want) || !strings.Contains(s.do, "anvil upgrade --to "+to) {
			t.Errorf("master step %d: %s", i, s.do)
		}
	}
	wl := planUpgradeWorkers(r)
	if len(wl.steps) != 1 || wl.steps[0].host != hs[3] || strings.Contains(wl.steps[0].do, "drain") || !strings.Contains(wl.steps[0].do, "restart the agent") {
		t.Fatalf("workers: %+v", wl.steps)
	}

	// A master down: a master's restart, which restarts its etcd member,
	// is refused unless --force.
	r, hs = setup()
	hs[0].facts.Installed[images.AnvilBinary] = "old"
	hs[1].err = &HostError{Host: hs[1].Name, Phase: "connect"}
	if _, err := planUpgrade(r).steps[0].run(context.Background()); err == nil || !strings.Contains(err.Error(), "w1 cannot be reached") {
		t.Errorf("with a master down: %v", err)
	}
	r.apply.o.Force = true
	if do := planUpgrade(r).steps[0].do; !strings.Contains(do, "--force") {
		t.Errorf("with a master down and --force: %s", do)
	}
}
