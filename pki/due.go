package pki

import (
	"fmt"
	"time"
)

// RenewWhenLeft is the share of a leaf's or kubeconfig's lifetime left at
// which it is due for renewal: a third, so a yearly certificate renews
// about four months before it expires and one of minutes (a test's)
// renews a few times within its validity.
const RenewWhenLeft = 3 // 1/RenewWhenLeft of the lifetime

// Due says which leaves and kubeconfigs of e are due for renewal at now
// (a third or less of their lifetime left, or expired): the names Renew
// takes. Those whose CA key is not here (an external CA) cannot be renewed
// here; each is a line in cannot, saying when it expires.
func Due(e Expiration, now time.Time) (due, cannot []string) {
	for _, c := range e.Certificates {
		if c.Missing || !c.dueAt(now) {
			continue
		}
		if c.ExternallyManaged {
			cannot = append(cannot, fmt.Sprintf("%s (%s) expires %s: its CA %s has no key here (an external CA), renew it there", c.Name, c.Path, c.Expires.Format(time.RFC3339), c.CA))
			continue
		}
		due = append(due, c.Name)
	}
	return due, cannot
}

// dueAt says whether a third or less of e's lifetime is left at now.
func (e Expiry) dueAt(now time.Time) bool { return !now.Before(e.RenewAt()) }

// RenewAt is when e falls due: a third of its lifetime before it expires.
// The lifetime is the validity it was issued with, without the minutes
// its start is backdated by for clocks behind (which would otherwise make
// a certificate of minutes due almost at once).
func (e Expiry) RenewAt() time.Time {
	life := e.Expires.Sub(e.Issued)
	if life > backdate {
		life -= backdate
	}
	return e.Expires.Add(-life / RenewWhenLeft)
}

// CAWarnAhead is how long before a CA expires it is warned about.
const CAWarnAhead = 90 * 24 * time.Hour

// CAWarnings are a line for each CA of e that expires within CAWarnAhead
// of now (or has): anvil never renews a CA by itself.
func CAWarnings(e Expiration, now time.Time) []string {
	var out []string
	for _, c := range e.CertificateAuthorities {
		if c.Missing || c.Expires.Sub(now) > CAWarnAhead {
			continue
		}
		left := "expired " + c.Expires.Format(time.RFC3339)
		if c.Expires.After(now) {
			left = fmt.Sprintf("expires %s, in %d days", c.Expires.Format(time.RFC3339), int(c.Expires.Sub(now).Hours()/24))
		}
		out = append(out, fmt.Sprintf("CA %s (%s) %s: everything it signed stops being trusted then; replace it before: anvil cluster rotate-ca -f CLUSTER-FILE", c.Name, c.Path, left))
	}
	return out
}
