package agent

import (
	"slices"
	"testing"
)

// TestComponentPodNetwork: the agent that runs the pod network may write
// the CNI config directory and hold CAP_NET_ADMIN; one that does not, only
// its own state.
func TestComponentPodNetwork(t *testing.T) {
	for _, tc := range []struct {
		name       string
		podNetwork bool
		writable   []string
		caps       []string
	}{
		{"no pod network", false, []string{"/var/lib/anvil/agent"}, nil},
		{"pod network", true, []string{"/var/lib/anvil/agent", "/etc/cni/net.d"}, []string{"NET_ADMIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Component(ComponentOptions{AnvilBinary: "/usr/local/bin/anvil", PodNetwork: tc.podNetwork})
			if err != nil {
				t.Fatal(err)
			}
			var writable []string
			for _, f := range c.Files {
				if f.Writable {
					writable = append(writable, f.Path)
				}
			}
			if !slices.Equal(writable, tc.writable) {
				t.Errorf("writes %q, want %q", writable, tc.writable)
			}
			if !slices.Equal(c.Capabilities, tc.caps) {
				t.Errorf("capabilities %q, want %q", c.Capabilities, tc.caps)
			}
		})
	}
}
