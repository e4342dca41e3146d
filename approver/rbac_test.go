package approver_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"anvil.dev/anvil/approver"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

// TestRBACGolden pins the approver's RBAC objects: a change to what its
// identity may do shows up as a diff of testdata/rbac.yaml in review.
func TestRBACGolden(t *testing.T) {
	o := approver.RBAC()
	var got bytes.Buffer
	for i, obj := range []any{o.ClusterRole, o.ClusterRoleBinding, o.Role, o.RoleBinding} {
		b, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			got.WriteString("---\n")
		}
		got.Write(b)
	}
	golden := filepath.Join("testdata", "rbac.yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./approver -run TestRBACGolden -update)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("the RBAC objects differ from %s:\n%s", golden, got.Bytes())
	}
	if s := o.RoleBinding.Subjects; len(s) != 1 || s[0].Name != approver.User {
		t.Errorf("bound to %v, want the user %s", s, approver.User)
	}
}
