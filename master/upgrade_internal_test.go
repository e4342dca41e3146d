package master

import (
	"slices"
	"strings"
	"testing"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
)

// TestUpgradeSwitches: an upgrade switches exactly the components whose
// definition names the version (the Kubernetes binaries or images), in
// start order, leaves etcd and anvil's own components alone, and skips
// what an earlier, interrupted run already switched.
func TestUpgradeSwitches(t *testing.T) {
	for _, layout := range []v1alpha1.Layout{v1alpha1.LayoutSystemd, v1alpha1.LayoutStaticPod, v1alpha1.LayoutProcess} {
		t.Run(string(layout), func(t *testing.T) {
			root := hostfs.Root(t.TempDir())
			var planRoot hostfs.Root
			if layout == v1alpha1.LayoutProcess {
				planRoot = root
			}
			oldPlan, newPlan := switchPlans(t, planRoot)
			// The old version's definitions, as init wrote them.
			olds, _, err := definitions(oldPlan, layout)
			if err != nil {
				t.Fatal(err)
			}
			var files []component.OutputFile
			for _, f := range olds {
				files = append(files, f)
			}
			if _, err := component.WriteTree(root, files); err != nil {
				t.Fatal(err)
			}
			sw, last, err := upgradeSwitches(root, oldPlan, newPlan, layout)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{APIServer, ControllerManager, Scheduler}
			if layout == v1alpha1.LayoutStaticPod {
				// anvil's static pods run the anvil image of the release.
				want = append(want, Etcd, Approver, VIP)
			}
			if got := switchedNames(sw); !slices.Equal(got, want) {
				t.Fatalf("switches %v, want %v", got, want)
			}
			for _, s := range sw {
				if !strings.Contains(string(s.file.Data), "v1.37.2") || strings.Contains(string(s.file.Data), "v1.36.3") {
					// The new definition names the new version only.
					t.Errorf("%s's new definition does not name only the new version:\n%s", s.spec.Name, s.file.Data)
				}
			}
			if last != nil && last.spec.Name != agent.Name {
				t.Errorf("last switch %s, want the agent or nothing", last.spec.Name)
			}
			// An interrupted run switched the apiserver: the next does the rest.
			if _, err := component.WriteTree(root, []component.OutputFile{sw[0].file}); err != nil {
				t.Fatal(err)
			}
			again, _, err := upgradeSwitches(root, oldPlan, newPlan, layout)
			if err != nil {
				t.Fatal(err)
			}
			if got := switchedNames(again); !slices.Equal(got, want[1:]) {
				t.Fatalf("after the apiserver was switched: %v, want %v", got, want[1:])
			}
			// Undoing that unfinished upgrade switches the apiserver back
			// alone.
			back, _, err := upgradeSwitches(root, newPlan, oldPlan, layout)
			if err != nil {
				t.Fatal(err)
			}
			if got := switchedNames(back); !slices.Equal(got, want[:1]) || !strings.Contains(string(back[0].file.Data), "v1.36.3") {
				t.Fatalf("undoing it: %v, want %v", got, want[:1])
			}
		})
	}
}

func switchedNames(sw []componentSwitch) []string {
	var out []string
	for _, s := range sw {
		out = append(out, s.spec.Name)
	}
	return out
}

// TestUpgradeSwitchesRewritesAJoinedAgentUnit: an agent unit that names the
// versioned anvil join ran (not the link) is switched to its rendering on an
// upgrade, though the version does not change that rendering: restarted as
// it is, it would run the old version's anvil again.
func TestUpgradeSwitchesRewritesAJoinedAgentUnit(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	oldPlan, newPlan := switchPlans(t, "")
	olds, _, err := definitions(oldPlan, v1alpha1.LayoutSystemd)
	if err != nil {
		t.Fatal(err)
	}
	joined := olds[agent.Name]
	if !strings.Contains(string(joined.Data), oldPlan.AnvilBinary) {
		t.Fatalf("the agent's unit does not name %s:\n%s", oldPlan.AnvilBinary, joined.Data)
	}
	joined.Data = []byte(strings.ReplaceAll(string(joined.Data), oldPlan.AnvilBinary, "/opt/anvil/bin/v1.36.3/anvil"))
	var files []component.OutputFile
	for name, f := range olds {
		if name == agent.Name {
			f = joined
		}
		files = append(files, f)
	}
	if _, err := component.WriteTree(root, files); err != nil {
		t.Fatal(err)
	}
	_, last, err := upgradeSwitches(root, oldPlan, newPlan, v1alpha1.LayoutSystemd)
	if err != nil {
		t.Fatal(err)
	}
	news, _, err := definitions(newPlan, v1alpha1.LayoutSystemd)
	if err != nil {
		t.Fatal(err)
	}
	if last == nil || last.spec.Name != agent.Name || string(last.file.Data) != string(news[agent.Name].Data) {
		t.Fatalf("the joined agent unit is not switched to its rendering: %+v", last)
	}
	// Once it is, the next run leaves it.
	if _, err := component.WriteTree(root, []component.OutputFile{last.file}); err != nil {
		t.Fatal(err)
	}
	if _, last, err = upgradeSwitches(root, oldPlan, newPlan, v1alpha1.LayoutSystemd); err != nil || last != nil {
		t.Fatalf("switched again: %+v %v", last, err)
	}
}

// switchPlans are the reference plan at v1.36.3 and at v1.37.2, each
// completed (versioned bin dirs), under root ("" for the plan's own).
func switchPlans(t *testing.T, root hostfs.Root) (oldPlan, newPlan Plan) {
	t.Helper()
	oldPlan = referencePlan()
	oldPlan.KubernetesVersion, oldPlan.BinDir = "v1.36.3", ""
	if root != "" {
		oldPlan.Root = root
	}
	oldPlan, err := oldPlan.Complete()
	if err != nil {
		t.Fatal(err)
	}
	newPlan = oldPlan
	newPlan.KubernetesVersion, newPlan.BinDir = "v1.37.2", ""
	if newPlan, err = newPlan.Complete(); err != nil {
		t.Fatal(err)
	}
	return oldPlan, newPlan
}
