// Package labtest starts a lab for an end-to-end test and removes it when
// the test ends, whatever happened:
//
//	l := labtest.Start(t, labtest.Options{Masters: 3, Workers: 1})
//	out := l.Run(t, l.Masters()[0].Name, "systemctl is-system-running")
//	apply(t, l.ClusterFile)
//
// A machine that cannot host a lab (not root, no systemd-nspawn or
// debootstrap and no way to install them) skips the test, except under
// CI=true, where it fails it: CI must never pass by running nothing.
//
// It is for tests only.
package labtest
