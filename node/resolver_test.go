package node

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestProbeResolvers: a resolver that answers passes, one that is silent
// or not there is named, each with why, all within the one timeout.
func TestProbeResolvers(t *testing.T) {
	answering := udpServer(t, func(q []byte) []byte {
		r := append([]byte{}, q...)
		r[2] |= 0x80 // a response; REFUSED would do too
		r[3] |= 0x05
		return r
	})
	silent := udpServer(t, func([]byte) []byte { return nil })
	// A port nothing listens on: the kernel's ICMP makes the read fail.
	closed := udpServer(t, nil)

	start := time.Now()
	got := ProbeResolvers(context.Background(), []string{answering, silent, closed}, 500*time.Millisecond)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("probing took %s", took)
	}
	if err, ok := got[answering]; ok {
		t.Errorf("the answering resolver: %v", err)
	}
	if err := got[silent]; err == nil || !strings.Contains(err.Error(), "no answer within 500ms") {
		t.Errorf("the silent resolver: %v", err)
	}
	if err := got[closed]; err == nil {
		t.Error("a resolver that is not there passed")
	}
}

// udpServer serves answer on a loopback port until the test ends; with a
// nil answer the port is closed again at once.
func udpServer(t *testing.T, answer func([]byte) []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	if answer == nil {
		pc.Close()
		return addr
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := answer(buf[:n]); r != nil {
				pc.WriteTo(r, from)
			}
		}
	}()
	return addr
}
