package installer

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
)

// focusedConformance is the part of the upstream conformance suite `make
// test` runs on TestInstallerE2E's cluster, so CI guards the areas a node
// must get right: pods, Deployments, Services, DNS, ConfigMaps, Secrets,
// service accounts and RBAC, events, admission webhooks and a pod that
// always pulls its image (the image mirror). `make conformance` runs all
// of it. Each entry is a test's name up to its labels (the " [" that
// follows it ends the match, so no longer name that starts the same is
// taken too); the run must pass every one, so a test the release renamed
// fails here instead of dropping out.
func focusedConformance() []string {
	return []string{
		"[sig-node] Pods should run through the lifecycle of Pods and PodStatus",
		"[sig-node] Pods should support remote command execution over websockets",
		"[sig-node] Pods should contain environment variables for services",
		"[sig-apps] Deployment RollingUpdateDeployment should delete old pods and create new ones",
		"[sig-apps] Deployment should run the lifecycle of a Deployment",
		"[sig-network] Services should serve a basic endpoint from pods",
		"[sig-network] Services should be able to create a functioning NodePort service",
		"[sig-network] Services should have session affinity work for service with type clusterIP",
		"[sig-network] DNS should provide DNS for pods for Subdomain",
		"[sig-network] DNS should support configurable pod DNS nameservers",
		"[sig-storage] ConfigMap should be consumable from pods in volume",
		"[sig-node] ConfigMap should be consumable as environment variable names with various prefixes",
		"[sig-storage] Secrets should be consumable from pods in volume with mappings",
		"[sig-node] Secrets should be consumable from pods in env vars",
		"[sig-auth] ServiceAccounts should mount an API token into pods",
		"[sig-auth] SubjectReview should support SubjectReview API operations",
		"[sig-instrumentation] Events should manage the lifecycle of an event",
		"[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should mutate configmap",
		"[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should be able to deny attaching pod",
		"[sig-auth] Projected PodCertificate [FeatureGate:PodCertificateRequest] [FeatureGate:ClusterTrustBundle] [FeatureGate:ClusterTrustBundleProjection] should allow server and client pods to establish an mTLS connection",
	}
}

// conformanceDir is the conformance build `make test` makes (anvil images
// build --conformance): e2e.test, the ginkgo CLI and the suite's images.
func conformanceDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("../bin/conformance", v1alpha1.DefaultKubernetesVersion))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := images.ReadPayload(dir); err != nil {
		msg := fmt.Sprintf("no conformance build in %s (make test builds it: anvil images build --conformance --out bin/conformance): %v", dir, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

// conformanceE2E puts the suite's images on the cluster's nodes with an
// apply of the cluster file that lists them (the nodes' agents import
// them), then runs the focused part of the suite from this machine.
func conformanceE2E(t *testing.T, e *e2e, kubeconfig string, apply func(*testing.T, Options) (*ApplyResult, error)) {
	dir := conformanceDir(t)
	archives, err := filepath.Glob(filepath.Join(dir, "images", "*.tar"))
	if err != nil || len(archives) == 0 {
		t.Fatalf("no image archives in %s/images: %v", dir, err)
	}
	file := rewrite(t, e.l, func(c *v1alpha1.Cluster) {
		c.SSH.User = "debian"
		c.Images = archives
	})
	o, _ := options(t, file)
	start := time.Now()
	res, err := apply(t, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("apply with the suite's images: %s, uploaded %d bytes", fmtDuration(res.Elapsed), res.BytesUploaded)
	var want []string
	for _, a := range archives {
		names, err := nodeArchiveNames(a)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, names...)
	}
	for _, h := range e.l.Hosts {
		var missing []string
		waitFor(t, 3*time.Minute, h.Name+" to import the suite's images", func() bool {
			have := strings.Fields(e.l.Run(t, h.Name, "sudo ctr -n k8s.io images ls -q 2>/dev/null"))
			missing = missing[:0]
			for _, w := range want {
				if !slices.Contains(have, w) {
					missing = append(missing, w)
				}
			}
			return len(missing) == 0
		})
	}
	t.Logf("every node has the suite's %d images %s after the apply began", len(want), fmtDuration(time.Since(start)))

	names := focusedConformance()
	var focus []string
	for _, n := range names {
		focus = append(focus, regexp.QuoteMeta(n+" ["))
	}
	report := t.TempDir()
	logFile := filepath.Join(report, "e2e.log")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, images.GinkgoBinary), "--procs=4", "--focus="+strings.Join(focus, "|"),
		"--timeout=18m", "--no-color", "-v", filepath.Join(dir, images.E2EBinary), "--",
		"--kubeconfig="+kubeconfig, "--provider=skeleton", "--report-dir="+report)
	out, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	start = time.Now()
	runErr := cmd.Run()
	out.Close()
	elapsed := time.Since(start)
	cases, err := readJUnit(filepath.Join(report, "junit_01.xml"))
	if err != nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("the suite (%v) wrote no report: %v\n%s", runErr, err, tail(string(log), 4000))
	}
	passed := 0
	for _, n := range names {
		i := slices.IndexFunc(cases, func(c junitCase) bool { return strings.Contains(c.Name, n+" [") })
		switch {
		case i < 0:
			t.Errorf("%q did not run: no test of the suite has that name", n)
		case cases[i].Failure != nil:
			t.Errorf("FAILED %s (%.0fs): %s", cases[i].Name, cases[i].Time, tail(cases[i].Failure.Message+cases[i].Failure.Text, 2000))
		case cases[i].Skipped != nil:
			t.Errorf("SKIPPED %s: %s", cases[i].Name, cases[i].Skipped.Message)
		default:
			passed++
		}
	}
	// The suite's own set-up and tear-down, and anything else that ran.
	for _, c := range cases {
		if slices.ContainsFunc(names, func(n string) bool { return strings.Contains(c.Name, n+" [") }) {
			continue
		}
		if c.Failure != nil {
			t.Errorf("FAILED %s: %s", c.Name, tail(c.Failure.Message+c.Failure.Text, 2000))
		} else if !strings.HasPrefix(c.Name, "[") || strings.HasPrefix(c.Name, "[It]") {
			t.Errorf("ran %s, which is not on the list", c.Name)
		}
	}
	t.Logf("focused conformance: %d of %d passed in %s with 4 processes", passed, len(names), fmtDuration(elapsed))
	if runErr != nil && !t.Failed() {
		t.Errorf("ginkgo: %v, with every test on the list passed", runErr)
	}
	if t.Failed() {
		log, _ := os.ReadFile(logFile)
		t.Logf("the end of the suite's output:\n%s", tail(string(log), 6000))
	}
}

// nodeArchiveNames are the image names an archive gives, as containerd
// lists them.
func nodeArchiveNames(file string) ([]string, error) {
	var m []struct{ RepoTags []string }
	cmd := exec.Command("tar", "-xOf", file, "manifest.json")
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("read %s's manifest.json: %w", file, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s's manifest.json: %w", file, err)
	}
	var out []string
	for _, e := range m {
		out = append(out, e.RepoTags...)
	}
	return out, nil
}

// junitCase is the part of a test case of ginkgo's JUnit report read here.
type junitCase struct {
	Name    string  `xml:"name,attr"`
	Status  string  `xml:"status,attr"`
	Time    float64 `xml:"time,attr"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
	Failure *junitFailure `xml:"failure"`
	// Error is how the report gives a failure outside a test's body (a
	// timeout, a panic, an interrupt); it counts as one.
	Error *junitFailure `xml:"error"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// readJUnit reads the cases of the suite's report that ran: those the
// focus left out are listed as skipped without a reason ("skipped - "
// starts a reason a test gave).
func readJUnit(path string) ([]junitCase, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r struct {
		Suites []struct {
			Cases []junitCase `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	var out []junitCase
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			if c.Failure == nil {
				c.Failure = c.Error
			}
			if c.Skipped != nil && !strings.HasPrefix(c.Skipped.Message, "skipped - ") && c.Failure == nil {
				continue
			}
			out = append(out, c)
		}
	}
	return out, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
