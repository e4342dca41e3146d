package master_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/internal/netnstest"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/master/mastertest"
	"anvil.dev/anvil/pki"
)

// echoEnv makes the test binary a server that answers every connection on
// the address with the name, standing in for a master's apiserver.
const echoEnv = "ANVIL_TEST_ECHO"

func serveEcho(spec string) {
	addr, name, _ := strings.Cut(spec, " ")
	l, err := net.Listen("tcp", addr)
	if err != nil {
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte(name))
		c.Close()
	}
}

// TestVIPFailover: two masters compete for the VIP through the real
// apiserver's Lease; the holder answers on the VIP; when the holder's
// machine dies (link down, process killed), the other takes the address
// and announces it, and clients reach it within seconds; a clean stop hands
// it over at once.
func TestVIPFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	cp := mastertest.Start(t, mastertest.Options{})
	vip := netip.AddrFrom4([4]byte{10, 199, cp.Network.Prefix.Addr().As4()[2], 250})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type machine struct {
		name string
		ns   *netnstest.NS
		vip  *exec.Cmd
	}
	start := func(name string) *machine {
		m := &machine{name: name, ns: cp.Network.Add(t)}
		echo := m.ns.Command(context.Background(), "env", echoEnv+"=0.0.0.0:7777 "+name, self)
		if err := echo.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { echo.Process.Kill(); echo.Wait() })
		m.vip = m.ns.Command(context.Background(), cp.Anvil, "vip", "--address", vip.String(), "--node-address", m.ns.Addr.String(),
			"--kubeconfig", cp.Root.Kubeconfig(pki.VIPKubeconfig), "--identity", name)
		m.vip.Stdout, m.vip.Stderr = os.Stderr, os.Stderr
		if err := m.vip.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.vip.Process.Kill(); m.vip.Wait() })
		return m
	}
	a, b := start("a"), start("b")
	byName := map[string]*machine{"a": a, "b": b}

	ask := func() string {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(vip, 7777).String(), 300*time.Millisecond)
		if err != nil {
			return ""
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		bs, _ := io.ReadAll(c)
		return string(bs)
	}
	waitFor := func(what string, limit time.Duration, want func(string) bool) (string, time.Duration) {
		t.Helper()
		start := time.Now()
		for time.Since(start) < limit {
			if got := ask(); want(got) {
				return got, time.Since(start)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: not within %s", what, limit)
		return "", 0
	}
	holder, _ := waitFor("a master holds the VIP", 30*time.Second, func(s string) bool { return s == "a" || s == "b" })
	lease, err := cp.Client(t).CoordinationV1().Leases("kube-system").Get(context.Background(), master.VIPLease, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != holder {
		t.Fatalf("the VIP answers as %q but the lease says %v (%v)", holder, lease.Spec.HolderIdentity, err)
	}
	other := map[string]string{"a": "b", "b": "a"}[holder]

	// The holder's machine dies: its link goes down and its process with it.
	dead := byName[holder]
	if err := dead.ns.SetLink(false); err != nil {
		t.Fatal(err)
	}
	dead.vip.Process.Signal(syscall.SIGKILL)
	_, took := waitFor("the VIP moves to the survivor", 20*time.Second, func(s string) bool { return s == other })
	t.Logf("VIP moved from a dead %s to %s in %s", holder, other, took.Round(100*time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("the VIP took %s to move, want under 10s", took)
	}

	// A clean stop releases the lease and the address at once.
	dead.ns.SetLink(true)
	next := start(holder)
	byName[holder] = next
	time.Sleep(2 * time.Second)
	byName[other].vip.Process.Signal(syscall.SIGTERM)
	_, took = waitFor("the VIP moves on a clean stop", 15*time.Second, func(s string) bool { return s == holder })
	t.Logf("VIP handed over on a clean stop in %s", took.Round(100*time.Millisecond))
}
