package installer

import (
	"context"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/cis"
	"anvil.dev/anvil/lab/labtest"
)

// cisE2E runs the CIS Kubernetes Benchmark's sections 1.1–1.4 and 2
// (package cis) over machine, a master of the lab that runs its control
// plane in layout, through SSH as root. The whole report goes to the test
// log: every item with its number, outcome and what was found, each
// exception with its reason. Any FAIL fails the test, as does an exception
// with no reason.
//
// TestStaticPodLayoutE2E and TestInstallerE2E's cluster group call it on
// the labs they already have (the static-pod and the systemd layout)
// rather than each bringing up one of its own.
func cisE2E(t *testing.T, l *labtest.Lab, machine string, layout v1alpha1.Layout) {
	t.Helper()
	c := l.Dial(t, machine)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	f, err := cis.Gather(ctx, cis.ShellHost{Run: c.Output}, cis.Options{})
	if err != nil {
		t.Fatalf("%s: %v", machine, err)
	}
	r := cis.Run(f)
	r.Host, r.Layout = machine, f.Layout
	t.Logf("gathered in %s:\n%s", fmtDuration(time.Since(start)), r)
	if f.Layout != string(layout) {
		t.Errorf("%s: the benchmark found the %s layout, want %s", machine, f.Layout, layout)
	}
	for _, it := range r.With(cis.Fail) {
		t.Errorf("%s FAIL: %s: %s", it.Number, it.Title, strings.Join(it.Found, "; "))
	}
	for _, it := range r.With(cis.Exception) {
		if it.Why == "" {
			t.Errorf("%s is an exception with no reason", it.Number)
		}
	}
}
