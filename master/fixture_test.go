package master_test

import (
	"flag"
	"testing"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

// testCluster is mastertest.Cluster: a small defaulted cluster built in
// code.
func testCluster() *v1alpha1.Cluster { return mastertest.Cluster() }

func testPlan(t *testing.T, c *v1alpha1.Cluster, node string, root hostfs.Root) master.Plan {
	t.Helper()
	p, err := master.NewPlan(c, node, root)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
