package podnet

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs (run with -update if intended):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestCNIConfigGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   CNIInput
	}{
		{"ipv4", CNIInput{PodCIDRs: prefixes("10.244.1.0/24"), ClusterPodCIDRs: prefixes("10.244.0.0/16")}},
		{"dual-stack-mtu", CNIInput{
			PodCIDRs:        prefixes("10.244.1.0/24", "fd00:10:244:1::/64"),
			ClusterPodCIDRs: prefixes("10.244.0.0/16", "fd00:10:244::/56"),
			MTU:             9000,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CNIConfig(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			// Whatever the golden file says, it must be a CNI config list.
			var list struct {
				CNIVersion string           `json:"cniVersion"`
				Name       string           `json:"name"`
				Plugins    []map[string]any `json:"plugins"`
			}
			if err := json.Unmarshal(got, &list); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if list.CNIVersion != "1.0.0" || list.Name != "anvil" || len(list.Plugins) != 2 ||
				list.Plugins[0]["type"] != "bridge" || list.Plugins[1]["type"] != "portmap" {
				t.Fatalf("not the config list anvil ships: %s", got)
			}
			checkGolden(t, filepath.Join("testdata", tc.name+".conflist"), got)
		})
	}
}

func TestCNIConfigRejects(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		in         CNIInput
	}{
		{"no range", "no pod CIDR", CNIInput{ClusterPodCIDRs: prefixes("10.244.0.0/16")}},
		{"outside cluster", "not inside", CNIInput{PodCIDRs: prefixes("10.99.1.0/24"), ClusterPodCIDRs: prefixes("10.244.0.0/16")}},
		{"wider than cluster", "not inside", CNIInput{PodCIDRs: prefixes("10.0.0.0/8"), ClusterPodCIDRs: prefixes("10.244.0.0/16")}},
		{"two of a family", "one per IP family", CNIInput{PodCIDRs: prefixes("10.244.1.0/24", "10.244.2.0/24"), ClusterPodCIDRs: prefixes("10.244.0.0/16")}},
		{"tiny mtu", "MTU", CNIInput{PodCIDRs: prefixes("10.244.1.0/24"), ClusterPodCIDRs: prefixes("10.244.0.0/16"), MTU: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CNIConfig(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestWriteCNIConfigOnlyWhenChanged(t *testing.T) {
	root := hostfs.Root(t.TempDir())
	in := CNIInput{PodCIDRs: prefixes("10.244.1.0/24"), ClusterPodCIDRs: prefixes("10.244.0.0/16")}
	a, _ := CNIConfig(in)
	in.MTU = 9000
	b, _ := CNIConfig(in)
	path := root.Path(CNIConfigPath)
	for i, step := range []struct {
		data []byte
		want fsutil.Outcome
	}{{a, fsutil.Created}, {a, fsutil.Unchanged}, {b, fsutil.Updated}} {
		var before os.FileInfo
		if i > 0 {
			before, _ = os.Stat(path)
		}
		got, err := WriteCNIConfig(root, step.data)
		if err != nil || got != step.want {
			t.Fatalf("step %d: %v %v, want %v", i, got, err, step.want)
		}
		after, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if after.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v", after.Mode())
		}
		if step.want == fsutil.Unchanged && !os.SameFile(before, after) {
			t.Fatalf("step %d: an unchanged config was rewritten", i)
		}
	}
	// A config an older anvil wrote 0644 is tightened, not rewritten.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := WriteCNIConfig(root, b); err != nil || got != fsutil.Updated {
		t.Fatalf("a 0644 config: %v %v, want %v", got, err, fsutil.Updated)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("a 0644 config is left %v (%v)", fi.Mode(), err)
	}
	if err := removeCNIConfig(root); err != nil {
		t.Fatal(err)
	}
	if err := removeCNIConfig(root); err != nil {
		t.Fatalf("second removal: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("config still there: %v", err)
	}
}
