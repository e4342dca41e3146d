package main

import (
	"strings"
	"testing"
)

// report is the shape of junit_01.xml as the e2e suite writes it.
const report = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" disabled="3" errors="0" failures="1" time="12">
  <testsuite name="Kubernetes e2e suite" package="/" tests="5" disabled="0" skipped="3" errors="0" failures="1" time="12">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
    <testcase name="[It] [sig-node] ConfigMap should be consumable via environment variable [NodeConformance] [Conformance]" classname="Kubernetes e2e suite" status="passed" time="6.2"></testcase>
    <testcase name="[It] [sig-network] DNS should provide DNS for services  [Conformance]" classname="Kubernetes e2e suite" status="failed" time="3">
      <failure message="" type="failed">[FAILED] Timed out after 600s.&#xA;unable to read dns results&#xA;In [It] at: dns_common.go:1</failure>
    </testcase>
    <testcase name="[It] [sig-storage] NFS should work" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
    <testcase name="[It] [sig-network] IPv6 works" classname="Kubernetes e2e suite" status="skipped" time="0.1"><skipped message="skipped - Requires at least 1 IPv6 node"></skipped></testcase>
  </testsuite>
</testsuites>`

func TestSummarize(t *testing.T) {
	s, err := summarize(strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want int
	}{
		{"passed", len(s.Passed), 1},
		{"failed", len(s.Failed), 1},
		{"skipped", len(s.Skipped), 1},
		{"not selected", s.NotSelected, 1},
		{"setup", s.Setup, 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.what, c.got, c.want)
		}
	}
	if len(s.Skipped) == 1 && s.Skipped[0].Detail != "Requires at least 1 IPv6 node" {
		t.Errorf("skip reason %q", s.Skipped[0].Detail)
	}
	if len(s.Failed) == 1 && !strings.Contains(s.Failed[0].Detail, "unable to read dns results") {
		t.Errorf("failure detail %q", s.Failed[0].Detail)
	}
	var out strings.Builder
	s.write(&out)
	if !strings.HasPrefix(out.String(), "passed 1, failed 1, skipped 1 (and 1 not selected by the focus)\n") {
		t.Errorf("summary starts %q", out.String())
	}
}
