package benchreport

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// Better says which direction wins for a figure.
type Better int

const (
	Lower  Better = iota // times, memory, latency
	Higher               // throughput
)

// Figure is one measured number and what it is judged against.
type Figure struct {
	Name   string
	Value  float64
	Unit   string
	Anchor float64 // the target the figure must beat
	Better Better
	// Note names where the anchor comes from ("kubeadm 40–55 s").
	Note string
}

// Ratio is Value/Anchor: below 1 beats a Lower anchor, above 1 a Higher one.
func (f Figure) Ratio() float64 {
	if f.Anchor == 0 {
		return 0
	}
	return f.Value / f.Anchor
}

// OK reports whether the figure meets its anchor.
func (f Figure) OK() bool {
	if f.Better == Higher {
		return f.Value >= f.Anchor
	}
	return f.Value <= f.Anchor
}

func (f Figure) String() string {
	cmp, verdict := "≤", "ok"
	if f.Better == Higher {
		cmp = "≥"
	}
	if !f.OK() {
		verdict = "MISSED"
	}
	note := ""
	if f.Note != "" {
		note = " (" + f.Note + ")"
	}
	return fmt.Sprintf("FIGURE  %-40s %10.3g %-5s anchor %s %g %s%s  ratio %.2f  %s",
		f.Name, f.Value, f.Unit, cmp, f.Anchor, f.Unit, note, f.Ratio(), verdict)
}

// Print writes the figure line to w.
func Print(w io.Writer, f Figure) { fmt.Fprintln(w, f.String()) }

// Report prints the figure on stdout (where `make bench` collects it) and
// records it as a benchmark metric too.
func Report(b *testing.B, f Figure) {
	b.Helper()
	// Metric units may not hold white space.
	b.ReportMetric(f.Value, strings.Join(strings.Fields(f.Unit+"/"+f.Name), "_"))
	Print(os.Stdout, f)
}
