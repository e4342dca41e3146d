package pki

import (
	"fmt"
	"slices"
	"strings"
)

// RenewAll renews every leaf and kubeconfig.
const RenewAll = "all"

// Renew issues the named leaves and kubeconfigs again (RenewAll: every one)
// from their CAs, with the SANs cfg gives and with new keys, as kubeadm's
// `certs renew` does: a renewal is also what an operator reaches for after
// a key may have leaked, and nothing pins a leaf's key. CAs are never
// renewed. A leaf or kubeconfig of a different CA is refused unless
// Options.Force; everything is judged before anything is written.
func Renew(dir string, cfg Config, names []string, opts Options) ([]Result, error) {
	leaves, kubeconfigs, err := selectRenewals(names, opts.KubeconfigDir != "")
	if err != nil {
		return nil, err
	}
	p, err := newPlanner(dir, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := p.loadCAs(false); err != nil {
		return nil, err
	}
	p.results = nil // the CAs are only read
	for _, spec := range leaves {
		if err := p.leaf(spec, true); err != nil {
			return nil, err
		}
	}
	for _, spec := range kubeconfigs {
		if err := p.kubeconfig(spec, true); err != nil {
			return nil, err
		}
	}
	return p.apply()
}

// RenewableNames lists what Renew accepts, RenewAll first.
func RenewableNames() []string {
	names := []string{RenewAll}
	for _, s := range Certificates() {
		names = append(names, s.Name)
	}
	for _, s := range Kubeconfigs() {
		names = append(names, s.Name)
	}
	return names
}

func selectRenewals(names []string, withKubeconfigs bool) ([]CertSpec, []KubeconfigSpec, error) {
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("nothing to renew: name certificates or %q", RenewAll)
	}
	all := slices.Contains(names, RenewAll)
	for _, n := range names {
		if slices.Contains(RenewableNames(), n) {
			continue
		}
		if slices.ContainsFunc(CAs(), func(c CASpec) bool { return c.Name == n }) {
			return nil, nil, fmt.Errorf("%q is a CA: anvil never renews CAs", n)
		}
		return nil, nil, fmt.Errorf("unknown certificate %q: use one of %s", n, strings.Join(RenewableNames(), ", "))
	}
	var leaves []CertSpec
	for _, s := range Certificates() {
		if all || slices.Contains(names, s.Name) {
			leaves = append(leaves, s)
		}
	}
	var kubeconfigs []KubeconfigSpec
	for _, s := range Kubeconfigs() {
		if !all && !slices.Contains(names, s.Name) {
			continue
		}
		if !withKubeconfigs {
			if all {
				continue
			}
			return nil, nil, fmt.Errorf("cannot renew %s: no kubeconfig directory given", s.Name)
		}
		kubeconfigs = append(kubeconfigs, s)
	}
	return leaves, kubeconfigs, nil
}
