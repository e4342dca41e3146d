package benchreport

import (
	"strings"
	"testing"
)

func TestFigure(t *testing.T) {
	tests := []struct {
		f      Figure
		ok     bool
		ratio  float64
		substr string
	}{
		{Figure{Name: "init", Value: 3, Unit: "s", Anchor: 6}, true, 0.5, "≤ 6 s"},
		{Figure{Name: "init", Value: 9, Unit: "s", Anchor: 6}, false, 1.5, "MISSED"},
		{Figure{Name: "snapshot", Value: 250, Unit: "MB/s", Anchor: 200, Better: Higher}, true, 1.25, "≥ 200 MB/s"},
		{Figure{Name: "snapshot", Value: 100, Unit: "MB/s", Anchor: 200, Better: Higher}, false, 0.5, "MISSED"},
	}
	for _, tt := range tests {
		if tt.f.OK() != tt.ok || tt.f.Ratio() != tt.ratio {
			t.Errorf("%+v: ok=%v ratio=%v", tt.f, tt.f.OK(), tt.f.Ratio())
		}
		if s := tt.f.String(); !strings.Contains(s, tt.substr) || !strings.HasPrefix(s, "FIGURE") {
			t.Errorf("%q lacks %q", s, tt.substr)
		}
	}
}

func BenchmarkReportAcceptsNamesWithSpaces(b *testing.B) {
	Report(b, Figure{Name: "peak RSS kube-apiserver (idle)", Value: 1, Unit: "MiB", Anchor: 2})
}
