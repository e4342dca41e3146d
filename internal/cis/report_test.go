package cis_test

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pmezard/go-difflib/difflib"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/cis"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

// TestItems holds the table to the benchmark's sections 1.1–1.4 and 2:
// 66 items, 52 of them automated, numbered in order without a gap.
func TestItems(t *testing.T) {
	items := cis.Items()
	if len(items) != 66 {
		t.Errorf("%d items, want 66", len(items))
	}
	auto := 0
	count := map[string]int{}
	for _, it := range items {
		if it.Automated {
			auto++
		}
		if it.Title == "" || it.Check == nil {
			t.Errorf("item %s has no title or no check", it.Number)
		}
		sec := it.Number[:strings.LastIndex(it.Number, ".")]
		count[sec]++
		if want := sec + "." + strconv.Itoa(count[sec]); it.Number != want {
			t.Errorf("item %s where %s was due", it.Number, want)
		}
	}
	if auto != 52 {
		t.Errorf("%d automated items, want 52", auto)
	}
	for sec, want := range map[string]int{"1.1": 21, "1.2": 29, "1.3": 7, "1.4": 2, "2": 7} {
		if count[sec] != want {
			t.Errorf("section %s has %d items, want %d", sec, count[sec], want)
		}
	}
}

// TestReport holds the printed report to testdata/report-systemd.txt (run
// with -update to rewrite it), and checks what a reader relies on: every
// item on a line of its own starting with its number and outcome, every
// exception and INFO with its reason, the counts on the last line.
func TestReport(t *testing.T) {
	h := renderedMaster(t, v1alpha1.LayoutSystemd)
	h.dir("/var/lib/cni/networks", 0o755)
	h.dir("/var/lib/cni/networks/anvil", 0o755)
	h.put("/var/lib/cni/networks/anvil/lock", 0o750, nil)
	_, r := gatherRun(t, h)
	out := r.String()

	golden := filepath.Join("testdata", "report-systemd.txt")
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(want)), B: difflib.SplitLines(out),
			FromFile: golden, ToFile: "the report", Context: 2,
		})
		t.Errorf("the report differs from %s (go test ./internal/cis -run TestReport -update rewrites it):\n%s", golden, diff)
	}

	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if want := "CIS Kubernetes Benchmark v1.10.0, sections 1.1–1.4 and 2, on lab-m1 (systemd layout)"; lines[0] != want {
		t.Errorf("heading %q, want %q", lines[0], want)
	}
	itemLine := regexp.MustCompile(`^(\S+) +(PASS|FAIL|EXCEPTION|INFO) +(.+) \((Automated|Manual)\)$`)
	var numbers []string
	status := ""
	explained := map[string]bool{}
	for _, l := range lines[1 : len(lines)-1] {
		if m := itemLine.FindStringSubmatch(l); m != nil {
			numbers = append(numbers, m[1])
			status = m[1] + " " + m[2]
			continue
		}
		switch {
		case strings.HasPrefix(l, strings.Repeat(" ", 19)+"found: "), strings.HasPrefix(l, strings.Repeat(" ", 26)):
		case strings.HasPrefix(l, strings.Repeat(" ", 19)+"why:   "):
			explained[status] = true
		default:
			t.Errorf("a line that is no item, finding or reason: %q", l)
		}
	}
	var all []string
	for _, it := range cis.Items() {
		all = append(all, it.Number)
	}
	if strings.Join(numbers, " ") != strings.Join(all, " ") {
		t.Errorf("items printed %v, want %v", numbers, all)
	}
	for _, it := range r.Results {
		key := it.Number + " " + string(it.Status)
		if (it.Status == cis.Exception || it.Status == cis.Info) != explained[key] {
			t.Errorf("%s: a reason printed %v", key, explained[key])
		}
	}
	if want := "66 items (52 automated, 14 manual): 60 PASS, 0 FAIL, 5 EXCEPTION, 1 INFO"; lines[len(lines)-1] != want {
		t.Errorf("last line %q, want %q", lines[len(lines)-1], want)
	}
	if got := r.Count(cis.Exception); got != len(r.With(cis.Exception)) || got != 5 {
		t.Errorf("Count(EXCEPTION) %d, With(EXCEPTION) %d, want 5", got, len(r.With(cis.Exception)))
	}
}
