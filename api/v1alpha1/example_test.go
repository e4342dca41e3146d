package v1alpha1

import (
	"testing"
)

// TestExampleClusterFile holds `anvil config init`'s output to its promise:
// strict decoding, no errors, no warnings, every section present.
func TestExampleClusterFile(t *testing.T) {
	c, err := Decode("example.yaml", []byte(ExampleClusterFile))
	if err != nil {
		t.Fatalf("the example does not decode:\n%v", err)
	}
	c.Default()
	warnings, err := Validate(c)
	if err != nil || warnings != nil {
		t.Fatalf("the example does not validate cleanly:\nwarnings: %v\nerrors: %v", warnings, err)
	}
	if got := len(c.Masters()); got != 3 {
		t.Errorf("%d masters, want 3", got)
	}
	if got := len(c.Workers()); got != 2 {
		t.Errorf("%d workers, want 2", got)
	}
	for _, section := range []string{"apiVersion", "kind", "name", "kubernetesVersion", "controlPlane", "ssh", "hosts", "networking", "etcd", "pki", "backup", "components"} {
		if _, ok := c.src.at[section]; !ok {
			t.Errorf("the example has no %s section", section)
		}
	}
}
