package netinfo

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// GratuitousARP announces that ip now lives at the interface's MAC address,
// so that neighbours on the segment update their ARP caches at once instead
// of waiting for their entries to expire: how a floating address moves.
func GratuitousARP(ifi *net.Interface, ip netip.Addr) error {
	if !ip.Is4() {
		return fmt.Errorf("gratuitous ARP needs an IPv4 address, not %s", ip)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("interface %s has no Ethernet address", ifi.Name)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("raw socket for ARP: %w", err)
	}
	defer unix.Close(fd)
	broadcast := [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	frame := arpFrame(ifi.HardwareAddr, ip)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6, Addr: broadcast}
	if err := unix.Sendto(fd, frame, 0, to); err != nil {
		return fmt.Errorf("send gratuitous ARP on %s: %w", ifi.Name, err)
	}
	return nil
}

// arpFrame is an Ethernet broadcast carrying an ARP request whose sender
// and target address are both ip: the form every stack treats as an update.
func arpFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	f := make([]byte, 0, 42)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) // destination
	f = append(f, mac...)                             // source
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = binary.BigEndian.AppendUint16(f, 1)      // hardware: Ethernet
	f = binary.BigEndian.AppendUint16(f, 0x0800) // protocol: IPv4
	f = append(f, 6, 4)                          // address lengths
	f = binary.BigEndian.AppendUint16(f, 1)      // request
	a := ip.As4()
	f = append(f, mac...)
	f = append(f, a[:]...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	f = append(f, a[:]...)
	return f
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
