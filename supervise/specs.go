package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
)

// Process specs as the supervisor reads them from disk, in dependency order.

// LoadSpecs reads the process specs under root and orders them so that
// every process comes after what it requires.
func LoadSpecs(root hostfs.Root) ([]component.Process, error) {
	dir := root.Path(component.ProcessSpecDir)
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no process specs in %s", dir)
	}
	byName := map[string]component.Process{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var spec component.Process
		if err := json.Unmarshal(b, &spec); err != nil {
			return nil, fmt.Errorf("read process spec %s: %w", p, err)
		}
		byName[spec.Name] = spec
	}
	return orderByRequires(byName)
}

// orderByRequires is a topological sort with ties broken by name, so the
// order is the same every time.
func orderByRequires(byName map[string]component.Process) ([]component.Process, error) {
	var out []component.Process
	placed := map[string]bool{}
	for len(placed) < len(byName) {
		var next []string
		for name, spec := range byName {
			if placed[name] {
				continue
			}
			ok := true
			for _, r := range spec.Requires {
				if _, known := byName[r]; !known {
					return nil, fmt.Errorf("process %s requires %s, which has no spec", name, r)
				}
				if !placed[r] {
					ok = false
				}
			}
			if ok {
				next = append(next, name)
			}
		}
		if len(next) == 0 {
			return nil, errors.New("process specs require each other in a cycle")
		}
		slices.Sort(next)
		for _, n := range next {
			placed[n] = true
			out = append(out, byName[n])
		}
	}
	return out, nil
}
