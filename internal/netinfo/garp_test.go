package netinfo

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

func TestARPFrame(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	f := arpFrame(mac, netip.MustParseAddr("10.0.0.100"))
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06,
		0, 1, 0x08, 0, 6, 4, 0, 1,
		0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 100,
		0, 0, 0, 0, 0, 0, 10, 0, 0, 100,
	}
	if !bytes.Equal(f, want) {
		t.Fatalf("frame\n%x\nwant\n%x", f, want)
	}
}
