package lab

import (
	"fmt"
	"net/netip"

	"anvil.dev/anvil/api/v1alpha1"
)

// DefaultPool is where a lab gets its /24 unless --subnet names one. It is
// only a starting point: a /24 that overlaps any route or address of this
// machine, or another lab, is skipped.
const DefaultPool = "10.213.0.0/16"

// Address plan inside a lab subnet: the bridge (the lab's "gateway", though
// it forwards nowhere) is .1, .5 is kept free for a floating control-plane
// address, machines start at .10, masters first.
const (
	gatewayOffset = 1
	vipOffset     = 5
	machineOffset = 10
)

// used is an address range this machine already has, with what it is for
// the error message.
type used struct {
	Prefix netip.Prefix
	What   string
}

// pickSubnet returns the first /24 of pool that overlaps nothing in taken.
func pickSubnet(pool netip.Prefix, taken []used) (netip.Prefix, error) {
	pool = pool.Masked()
	if !pool.Addr().Is4() || pool.Bits() > 24 {
		return netip.Prefix{}, fmt.Errorf("lab pool %s: need an IPv4 prefix of /24 or larger", pool)
	}
	for a := pool.Addr(); pool.Contains(a); {
		p := netip.PrefixFrom(a, 24)
		if conflict(p, taken) == nil {
			return p, nil
		}
		b := a.As4()
		if b[2] == 255 {
			if b[1] == 255 {
				break
			}
			b[1]++
		}
		b[2]++
		a = netip.AddrFrom4(b)
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 left in %s: every one overlaps a route, an address or another lab; give one with --subnet", pool)
}

// checkSubnet refuses a subnet that is malformed, too small for n machines
// plus the reserved addresses, or overlaps something this machine uses.
func checkSubnet(p netip.Prefix, n int, taken []used) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("subnet %s: need an IPv4 prefix such as 10.213.7.0/24", p)
	}
	if p != p.Masked() {
		return fmt.Errorf("subnet %s has host bits set: did you mean %s?", p, p.Masked())
	}
	size := 1 << (32 - p.Bits())
	if need := machineOffset + n + 1; size < need {
		return fmt.Errorf("subnet %s has %d addresses; %d machines need at least %d (machines start at .%d)", p, size, n, need, machineOffset)
	}
	if !p.Addr().IsPrivate() {
		return fmt.Errorf("subnet %s is not a private range (10/8, 172.16/12, 192.168/16): a lab must not shadow real addresses", p)
	}
	return conflict(p, taken)
}

func conflict(p netip.Prefix, taken []used) error {
	for _, t := range taken {
		if t.Prefix.Bits() == 0 {
			continue // a default route overlaps everything and decides nothing
		}
		if p.Overlaps(t.Prefix) {
			return fmt.Errorf("subnet %s overlaps %s", p, t.What)
		}
	}
	return nil
}

// offset is the address n places after p's network address.
func offset(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// vip is the lab's address no machine has, for controlPlane.vip.
func (s *state) vip() netip.Addr { return offset(s.Subnet, vipOffset) }

// machinePlan is a machine before it exists: its name, role and address.
type machinePlan struct {
	Name    string
	Role    v1alpha1.Role
	Address netip.Addr
}

// planMachines names and numbers a lab's machines, masters first.
func planMachines(lab string, subnet netip.Prefix, masters, workers int) []machinePlan {
	var out []machinePlan
	for i := range masters {
		out = append(out, machinePlan{MachineName(lab, v1alpha1.RoleMaster, i+1), v1alpha1.RoleMaster, offset(subnet, machineOffset+len(out))})
	}
	for i := range workers {
		out = append(out, machinePlan{MachineName(lab, v1alpha1.RoleWorker, i+1), v1alpha1.RoleWorker, offset(subnet, machineOffset+len(out))})
	}
	return out
}
