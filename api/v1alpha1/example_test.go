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

// TestExampleClusterFileFor: the example with the backup key config init
// makes decodes and validates as cleanly, and encrypts to that key.
func TestExampleClusterFileFor(t *testing.T) {
	const r = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
	text := ExampleClusterFileFor(r, "backup.key")
	c, err := Decode("example.yaml", []byte(text))
	if err != nil {
		t.Fatalf("does not decode:\n%v", err)
	}
	c.Default()
	if warnings, err := Validate(c); err != nil || warnings != nil {
		t.Fatalf("does not validate cleanly: %v %v", warnings, err)
	}
	if len(c.Backup.Recipients) != 1 || c.Backup.Recipients[0] != r {
		t.Errorf("backup.recipients = %v, want [%s]", c.Backup.Recipients, r)
	}
}
