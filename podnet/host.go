package podnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"anvil.dev/anvil/internal/fsutil"
)

const (
	// MasqueradeTable is anvil's nftables table (family inet, so one
	// table serves IPv4 and IPv6); nothing else of the ruleset is touched.
	MasqueradeTable = "anvil-podnet"
	tableFamily     = "inet"
)

// ErrNftMissing means the nft command is not installed, so pod traffic
// leaving the cluster cannot be masqueraded.
var ErrNftMissing = errors.New("the nft command is missing (install Debian's nftables package): pod traffic to outside the cluster cannot be masqueraded")

// masqueradeRuleset is the table: pod traffic to anything outside the
// cluster's pod CIDR of its family leaves with the node's address;
// pod-to-pod traffic keeps the pod's address (so NetworkPolicies and logs
// see who spoke) and so does multicast. fully-random picks the source port
// at random, so two pods' connections cannot race for one port mapping.
func masqueradeRuleset(cluster []netip.Prefix) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n", tableFamily, MasqueradeTable)
	seen := map[bool]netip.Prefix{}
	for _, p := range cluster {
		if !p.IsValid() || p.Masked() != p {
			return "", fmt.Errorf("masquerade: cluster pod CIDR %s is not a network prefix", p)
		}
		if q, dup := seen[p.Addr().Is4()]; dup {
			return "", fmt.Errorf("masquerade: cluster pod CIDRs %s and %s are of one IP family", q, p)
		}
		seen[p.Addr().Is4()] = p
		proto, multicast := "ip", "224.0.0.0/4"
		if p.Addr().Is6() {
			proto, multicast = "ip6", "ff00::/8"
		}
		fmt.Fprintf(&b, "\t\t%[1]s saddr %[2]s %[1]s daddr %[2]s return\n", proto, p)
		fmt.Fprintf(&b, "\t\t%[1]s saddr %[2]s %[1]s daddr %[3]s return\n", proto, p, multicast)
		fmt.Fprintf(&b, "\t\t%[1]s saddr %[2]s masquerade fully-random\n", proto, p)
	}
	b.WriteString("\t}\n}\n")
	return b.String(), nil
}

// ensureMasquerade makes anvil's table in the namespace at nsPath read
// exactly as the rendered ruleset: gather (list it), compare, and only on a
// difference replace it in one nft transaction, so the table is never
// missing or half-made, not even for a packet.
func ensureMasquerade(ctx context.Context, nsPath string, cluster []netip.Prefix) (fsutil.Outcome, error) {
	want, err := masqueradeRuleset(cluster)
	if err != nil {
		return fsutil.Unchanged, err
	}
	exists, err := tableExists(ctx, nsPath)
	if err != nil {
		return fsutil.Unchanged, err
	}
	outcome := fsutil.Created
	if exists {
		have, err := runNft(ctx, nsPath, "", "list", "table", tableFamily, MasqueradeTable)
		if err != nil {
			return fsutil.Unchanged, err
		}
		if sameRuleset(have, want) {
			return fsutil.Unchanged, nil
		}
		outcome = fsutil.Updated
	}
	// Declaring the table first makes the delete valid when it is absent;
	// nft -f runs the whole script as one transaction.
	script := replaceTable() + want
	if _, err := runNft(ctx, nsPath, script, "-f", "-"); err != nil {
		return fsutil.Unchanged, fmt.Errorf("replace nftables table %s %s: %w", tableFamily, MasqueradeTable, err)
	}
	return outcome, nil
}

// removeMasquerade deletes anvil's table; it is not an error if it is gone.
func removeMasquerade(ctx context.Context, nsPath string) error {
	if _, err := runNft(ctx, nsPath, replaceTable(), "-f", "-"); err != nil {
		return fmt.Errorf("delete nftables table %s %s: %w", tableFamily, MasqueradeTable, err)
	}
	return nil
}

func replaceTable() string {
	return fmt.Sprintf("table %[1]s %[2]s\ndelete table %[1]s %[2]s\n", tableFamily, MasqueradeTable)
}

// sameRuleset compares nft's listing with the rendering, whitespace aside.
// A newer nft that prints the same rules differently only costs a
// needless (atomic) replace.
func sameRuleset(a, b string) bool {
	return strings.Join(strings.Fields(a), " ") == strings.Join(strings.Fields(b), " ")
}

func tableExists(ctx context.Context, nsPath string) (bool, error) {
	out, err := runNft(ctx, nsPath, "", "-j", "list", "tables", tableFamily)
	if err != nil {
		return false, err
	}
	var listing struct {
		Nftables []struct {
			Table *struct {
				Family string `json:"family"`
				Name   string `json:"name"`
			} `json:"table"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &listing); err != nil {
		return false, fmt.Errorf("nft -j list tables: %w", err)
	}
	for _, o := range listing.Nftables {
		if o.Table != nil && o.Table.Family == tableFamily && o.Table.Name == MasqueradeTable {
			return true, nil
		}
	}
	return false, nil
}

// nftPath finds nft: on $PATH, or in /usr/sbin and /sbin, which a
// service's $PATH may lack.
func nftPath() (string, error) { return lookNft("/usr/sbin/nft", "/sbin/nft") }

func lookNft(fallbacks ...string) (string, error) {
	if p, err := exec.LookPath("nft"); err == nil {
		return p, nil
	}
	for _, p := range fallbacks {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNftMissing
}

func runNft(ctx context.Context, nsPath, stdin string, args ...string) (string, error) {
	bin, err := nftPath()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	err = inNetNS(nsPath, func() error {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return cmd.Run()
	})
	if err != nil {
		return "", fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// forwardingFiles are the sysctls that make a node route its pods'
// packets, for the families of the cluster's pod CIDRs. IPv6 forwarding
// also makes the kernel ignore router advertisements on every interface
// whose accept_ra is 1: a dual-stack node needs its IPv6 default route
// static (or accept_ra=2).
func forwardingFiles(cluster []netip.Prefix) []string {
	files := []string{"net/ipv4/ip_forward"}
	for _, p := range cluster {
		if p.Addr().Is6() {
			files = append(files, "net/ipv6/conf/all/forwarding")
			break
		}
	}
	return files
}

// ensureForwarding sets the forwarding sysctls under procSys (/proc/sys)
// to 1 where they are not; it reports the files it changed. nsPath names
// the network namespace whose sysctls they are ("" = this one).
func ensureForwarding(nsPath, procSys string, cluster []netip.Prefix) (changed []string, err error) {
	err = inNetNS(nsPath, func() error {
		for _, f := range forwardingFiles(cluster) {
			path := filepath.Join(procSys, f)
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			if strings.TrimSpace(string(b)) == "1" {
				continue
			}
			if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
				if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
					return fmt.Errorf("%s is %s and cannot be set to 1 (%w): /proc/sys is read-only here; set %s=1 on the host", path, strings.TrimSpace(string(b)), err, sysctlName(f))
				}
				return fmt.Errorf("write %s: %w", path, err)
			}
			changed = append(changed, path)
		}
		return nil
	})
	return changed, err
}

func sysctlName(f string) string { return strings.ReplaceAll(f, "/", ".") }
