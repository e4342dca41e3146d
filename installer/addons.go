package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Phase addons: the cluster add-ons init deployed (cluster DNS) are
// applied again from the primary when its `anvil status` found them
// drifted (anvil's fields edited, an object deleted) or CoreDNS's
// replicas share a node while another could run one; a cluster whose
// add-ons are as anvil applies them plans nothing. Init applies them the
// first time.

func planAddons(r *run) plan {
	p := r.primary
	if p == nil || p.failed() || p.facts == nil || p.facts.Status == nil {
		return plan{}
	}
	st := p.facts.Status
	switch {
	case st.AddonError != "":
		return plan{steps: []step{{host: p, do: "cannot tell whether the cluster add-ons drifted: " + st.AddonError}}}
	case len(st.AddonDrift) == 0 && !nodesAdded(r):
		return plan{steps: []step{{host: p, do: "nothing to do: the cluster add-ons are as anvil applies them"}}}
	}
	why := addonsWhy(st.AddonDrift)
	if why == "" {
		// The facts were read before the joins: what the new nodes
		// change (CoreDNS replicas to spread over them) is seen only now.
		why = "nodes joined or became Ready in this run: CoreDNS's replicas are spread over them"
	}
	return plan{steps: []step{{host: p, do: "re-apply the cluster add-ons (anvil addons apply): " + why,
		run: func(ctx context.Context) (string, error) {
			var out strings.Builder
			if err := r.runLogged(ctx, p, "anvil addons apply", anvilOnHost+" addons apply -o json", nil, &out); err != nil {
				return "", err
			}
			var changed []string
			if err := json.Unmarshal([]byte(out.String()), &changed); err != nil {
				return "", fmt.Errorf("anvil addons apply: its output is not a list of objects: %w", err)
			}
			if len(changed) == 0 {
				return "nothing changed: the add-ons were as anvil applies them", nil
			}
			return fmt.Sprintf("applied %d change(s): %s", len(changed), strings.Join(changed, ", ")), nil
		}}}}
}

// nodesAdded says whether the run added Nodes the facts could not count:
// it joined hosts, or waited for a Node to become Ready (a host whose join
// an earlier run started, cut off before its add-ons step). Either may
// leave CoreDNS's replicas on one node while another runs none.
func nodesAdded(r *run) bool {
	return r.apply.becameReady.Load() > 0 ||
		slices.ContainsFunc(r.planned, func(s PlannedStep) bool { return s.Change && makesCredentials(s.Phase) })
}

// addonsWhy says why the add-ons are applied again, from the drift `anvil
// status` found: objects that changed, and CoreDNS replicas to move
// (addons.Spread).
func addonsWhy(drift []string) string {
	var changed, why []string
	for _, d := range drift {
		if strings.Contains(d, " moved off ") {
			why = append(why, strings.Replace(d, " moved off ", " to move off ", 1))
		} else {
			changed = append(changed, d)
		}
	}
	if len(changed) > 0 {
		why = append([]string{strings.Join(changed, ", ") + " changed since anvil applied them"}, why...)
	}
	return strings.Join(why, "; ")
}
