package cis

import (
	"fmt"
	"io"
	"strings"
)

// ItemResult is one item and its outcome.
type ItemResult struct {
	Item
	Result
}

// Report is the benchmark's outcome on one machine.
type Report struct {
	// Host and Layout head the printed report; Run leaves them to the
	// caller, who knows the machine's name.
	Host    string
	Layout  string
	Results []ItemResult
}

// Count is how many items ended with s.
func (r Report) Count(s Status) int {
	n := 0
	for _, it := range r.Results {
		if it.Status == s {
			n++
		}
	}
	return n
}

// With returns the items that ended with s.
func (r Report) With(s Status) []ItemResult {
	var out []ItemResult
	for _, it := range r.Results {
		if it.Status == s {
			out = append(out, it)
		}
	}
	return out
}

// Summary is the counts on one line: "66 items (52 automated, 14
// manual): 60 PASS, 0 FAIL, 5 EXCEPTION, 1 INFO".
func (r Report) Summary() string {
	auto := 0
	for _, it := range r.Results {
		if it.Automated {
			auto++
		}
	}
	var counts []string
	for _, s := range Statuses() {
		counts = append(counts, fmt.Sprintf("%d %s", r.Count(s), s))
	}
	return fmt.Sprintf("%d items (%d automated, %d manual): %s", len(r.Results), auto, len(r.Results)-auto, strings.Join(counts, ", "))
}

// reportWidth is where the report wraps its explanations.
const reportWidth = 110

// WriteTo prints the report: a heading, one line per item (number, status,
// title as the benchmark words it), what the check found and, for an
// exception or an item left to judge, why; then the summary.
func (r Report) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	b.WriteString(Benchmark)
	if r.Host != "" {
		b.WriteString(", on " + r.Host)
	}
	if r.Layout != "" {
		b.WriteString(" (" + r.Layout + " layout)")
	}
	b.WriteString("\n")
	const indent = "                   "
	for _, it := range r.Results {
		kind := "Manual"
		if it.Automated {
			kind = "Automated"
		}
		fmt.Fprintf(&b, "%-7s %-10s %s (%s)\n", it.Number, it.Status, it.Title, kind)
		for _, f := range it.Found {
			b.WriteString(wrap(indent+"found: ", indent+"       ", f))
		}
		if it.Why != "" {
			b.WriteString(wrap(indent+"why:   ", indent+"       ", it.Why))
		}
	}
	b.WriteString(r.Summary() + "\n")
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// String is the printed report.
func (r Report) String() string {
	var b strings.Builder
	_, _ = r.WriteTo(&b)
	return b.String()
}

// wrap fills s into lines of reportWidth, the first starting with first,
// the rest with rest.
func wrap(first, rest, s string) string {
	var b strings.Builder
	line := first
	empty := true
	for _, word := range strings.Fields(s) {
		if !empty && len(line)+1+len(word) > reportWidth {
			b.WriteString(line + "\n")
			line, empty = rest, true
		}
		if !empty {
			line += " "
		}
		line += word
		empty = false
	}
	b.WriteString(line + "\n")
	return b.String()
}
