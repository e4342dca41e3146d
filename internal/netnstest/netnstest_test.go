package netnstest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

func TestNamespacesReachEachOtherOverTheBridge(t *testing.T) {
	n := NewNetwork(t)
	a, b := n.Add(t), n.Add(t)
	out, err := a.Command(context.Background(), "ip", "route", "get", b.Addr.String()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dev eth0") {
		t.Fatalf("route from %s to %s: %v %s", a.Name, b.Addr, err, out)
	}
	if out, err := a.Command(context.Background(), "ping", "-c1", "-W2", b.Addr.String()).CombinedOutput(); err != nil {
		if _, lerr := exec.LookPath("ping"); lerr == nil {
			t.Fatalf("ping: %v %s", err, out)
		}
	}
	if err := a.SetLink(false); err != nil {
		t.Fatal(err)
	}
	if err := a.SetLink(true); err != nil {
		t.Fatal(err)
	}
}

func TestTeardown(t *testing.T) {
	var names []string
	var br string
	t.Run("inner", func(t *testing.T) {
		n := NewNetwork(t)
		br = n.Bridge
		names = append(names, n.Add(t).Name)
		cmd := exec.Command("ip", "netns", "exec", names[0], "sleep", "1000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
	})
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), names[0]) {
		t.Errorf("namespace %s left behind", names[0])
	}
	if err := exec.Command("ip", "link", "show", br).Run(); err == nil {
		t.Errorf("bridge %s left behind", br)
	}
}
