package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// report is the shape of junit_01.xml as the e2e suite writes it.
const report = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="7" disabled="5" errors="0" failures="1" time="12">
  <testsuite name="Kubernetes e2e suite" package="/" tests="7" disabled="0" skipped="5" errors="0" failures="1" time="12">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
    <testcase name="[It] [sig-node] ConfigMap should be consumable via environment variable [NodeConformance] [Conformance]" classname="Kubernetes e2e suite" status="passed" time="6.2"></testcase>
    <testcase name="[It] [sig-network] DNS should provide DNS for services  [Conformance]" classname="Kubernetes e2e suite" status="failed" time="3">
      <failure message="" type="failed">[FAILED] Timed out after 600s.&#xA;unable to read dns results&#xA;In [It] at: dns_common.go:1</failure>
    </testcase>
    <testcase name="[It] [sig-storage] NFS should work" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
    <testcase name="[It] [sig-node] ImageVolume should succeed with pod and pull policy of Always [LinuxOnly] [Conformance]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
    <testcase name="[It] [sig-node] ImageVolume should fail [Feature:Other]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
    <testcase name="[It] [sig-network] IPv6 works" classname="Kubernetes e2e suite" status="skipped" time="0.1"><skipped message="skipped - Requires at least 1 IPv6 node"></skipped></testcase>
  </testsuite>
</testsuites>`

func TestSummarize(t *testing.T) {
	skips := []acceptedSkip{{re: regexp.MustCompile(`\[sig-node\] ImageVolume .*`), reason: "needs Alpine"}}
	s, err := summarize(strings.NewReader(report), regexp.MustCompile(`\[Conformance\]`), skips)
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
		{"accepted skips", len(s.Accepted), 1},
		{"not selected", s.NotSelected, 2},
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
	if len(s.Accepted) == 1 && (s.Accepted[0].Detail != "needs Alpine" || !strings.Contains(s.Accepted[0].Name, "pull policy of Always")) {
		t.Errorf("accepted skip %+v", s.Accepted[0])
	}
	var out strings.Builder
	s.write(&out)
	if !strings.HasPrefix(out.String(), "passed 1, failed 1, skipped 2 (1 of them accepted skips; and 2 not selected by the focus)\n") {
		t.Errorf("summary starts %q", out.String())
	}
}

// Without the accepted skips a test the run's --skip left out is only "not
// selected".
func TestSummarizeWithoutAcceptedSkips(t *testing.T) {
	s, err := summarize(strings.NewReader(report), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Accepted) != 0 || s.NotSelected != 3 {
		t.Errorf("accepted %d, not selected %d; want 0 and 3", len(s.Accepted), s.NotSelected)
	}
}

func TestReadAcceptedSkips(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	skips, err := readAcceptedSkips(write("good", "# comment\n\nA .*b\n\tone\n  two\nC\n\tthree\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(skips) != 2 || skips[0].re.String() != "A .*b" || skips[0].reason != "one two" || skips[1].reason != "three" {
		t.Errorf("parsed %+v", skips)
	}
	// The repository's own file parses, and each entry says why.
	if _, err := readAcceptedSkips("../conformance-skips"); err != nil {
		t.Errorf("hack/conformance-skips: %v", err)
	}
	for name, c := range map[string]struct{ text, want string }{
		"no-reason":      {"A\nB\n\twhy\n", "no-reason:1: the expression has no reason"},
		"last-no-reason": {"A\n\twhy\n\nB\n", "last-no-reason:4: the expression has no reason"},
		"reason-first":   {"\twhy\nA\n", "reason-first:1: a reason before any expression"},
		"bad-regexp":     {"A(\n\twhy\n", "bad-regexp:1: error parsing regexp"},
		"empty":          {"# nothing\n", "no expression"},
	} {
		_, err := readAcceptedSkips(write(name, c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
}
