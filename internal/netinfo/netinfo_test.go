package netinfo

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"anvil.dev/anvil/internal/netnstest"
)

// TestDefaultRouteAddressInNamespace runs the lookup inside a namespace the
// test made (through the test binary), where the answer is known.
func TestDefaultRouteAddressInNamespace(t *testing.T) {
	if os.Getenv("NETINFO_CHILD") == "1" {
		a, err := DefaultRouteAddress()
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("ADDR=" + a.String() + "\n")
		return
	}
	netnstest.Require(t)
	n := netnstest.NewNetwork(t)
	ns := n.Add(t)
	self, _ := os.Executable()
	cmd := ns.Command(context.Background(), "env", "NETINFO_CHILD=1", self, "-test.run", "^TestDefaultRouteAddressInNamespace$", "-test.v")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ADDR="+ns.Addr.String()) {
		t.Fatalf("want %s, got:\n%s", ns.Addr, out)
	}
	// Without a default route there is no answer.
	if err := exec.Command("ip", "netns", "exec", ns.Name, "ip", "route", "del", "default").Run(); err != nil {
		t.Fatal(err)
	}
	out, _ = ns.Command(context.Background(), "env", "NETINFO_CHILD=1", self, "-test.run", "^TestDefaultRouteAddressInNamespace$", "-test.v").CombinedOutput()
	if !strings.Contains(string(out), "no default route") {
		t.Fatalf("want a no-default-route error, got:\n%s", out)
	}
}
