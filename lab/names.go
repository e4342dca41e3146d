package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"strconv"

	"anvil.dev/anvil/api/v1alpha1"
)

// DefaultName is the lab a command means when it is given no --name.
const DefaultName = "anvil"

// MaxNameLen keeps LAB-w123 a valid host name with room to spare.
const MaxNameLen = 40

// Machine counts: enough for HA tests and benchmarks, few enough that the
// address plan of a /24 holds them.
const (
	MaxMasters = 9
	MaxWorkers = 50
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// machineRE splits LAB-m1 / LAB-w12 into the lab and the machine's role
// and ordinal. Lab names may contain dashes; the suffix never does.
var machineRE = regexp.MustCompile(`^([a-z0-9][a-z0-9-]*)-([mw])([1-9][0-9]*)$`)

// ValidateName checks a lab name: lower-case letters, digits and dashes,
// because it becomes part of host names.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen || !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: use 1 to %d lower-case letters, digits and dashes, starting and ending with a letter or digit", name, MaxNameLen)
	}
	return nil
}

// MachineName is the name of a lab's ordinal-th master or worker (from 1).
func MachineName(lab string, role v1alpha1.Role, ordinal int) string {
	r := "m"
	if role == v1alpha1.RoleWorker {
		r = "w"
	}
	return lab + "-" + r + strconv.Itoa(ordinal)
}

// SplitMachineName returns the lab a machine belongs to, so commands can
// take just the machine's name.
func SplitMachineName(machine string) (lab string, role v1alpha1.Role, ordinal int, err error) {
	m := machineRE.FindStringSubmatch(machine)
	if m == nil || ValidateName(m[1]) != nil {
		return "", "", 0, fmt.Errorf("%q is not a lab machine name (LAB-m1, LAB-w1, …)", machine)
	}
	role = v1alpha1.RoleMaster
	if m[2] == "w" {
		role = v1alpha1.RoleWorker
	}
	ordinal, _ = strconv.Atoi(m[3])
	return m[1], role, ordinal, nil
}

// Interface names are limited to 15 bytes, so they are derived from a hash
// of the lab (and machine) name: two labs never collide however long their
// names, and `down` finds them again from the name alone, even without
// state. The alias (ip link shows it) says what they belong to.
const (
	bridgePrefix = "anvb" // + 8 hex: the lab's bridge
	vethPrefix   = "anvm" // + 8 hex: a machine's host-side veth
	aliasPrefix  = "anvil-lab:"
	// guestIface is the machine's NIC as its own tools see it.
	guestIface = "eth0"
)

func bridgeName(lab string) string { return bridgePrefix + shortHash(lab)[:8] }

func vethName(lab, machine string) string { return vethPrefix + shortHash(lab + "/" + machine)[:8] }

func bridgeAlias(lab string) string { return aliasPrefix + lab }

func vethAlias(lab, machine string) string { return aliasPrefix + lab + "/" + machine }

// guestMAC is the machine's NIC address: locally administered, derived from
// the names so that it survives stop/start like a real NIC's.
func guestMAC(lab, machine string) net.HardwareAddr { return mac("g/" + lab + "/" + machine) }

func bridgeMAC(lab string) net.HardwareAddr { return mac("b/" + lab) }

func mac(seed string) net.HardwareAddr {
	h := sha256.Sum256([]byte(seed))
	hw := net.HardwareAddr(h[:6])
	hw[0] = hw[0]&0xfc | 0x02 // unicast, locally administered
	return hw
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
