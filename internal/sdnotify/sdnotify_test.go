package sdnotify

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen stands in for systemd's notification socket.
func listen(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, p
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestReadyAndWatchdog(t *testing.T) {
	c, p := listen(t)
	t.Setenv("NOTIFY_SOCKET", p)
	Ready("serving")
	if got := read(t, c); !strings.Contains(got, "READY=1") || !strings.Contains(got, "STATUS=serving") {
		t.Fatalf("got %q", got)
	}
	t.Setenv("WATCHDOG_USEC", "100000")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Watchdog(ctx, func() bool { return true })
	if got := read(t, c); got != "WATCHDOG=1" {
		t.Fatalf("got %q", got)
	}
}

func TestUnhealthyDaemonStopsPinging(t *testing.T) {
	c, p := listen(t)
	t.Setenv("NOTIFY_SOCKET", p)
	t.Setenv("WATCHDOG_USEC", "50000")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Watchdog(ctx, func() bool { return false })
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("an unhealthy daemon pinged the watchdog (%d bytes)", n)
	}
}
