package agent_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/master/mastertest"
)

// metricsSnapshot is a scrape of a component's /metrics.
type metricsSnapshot map[string]*dto.MetricFamily

func parseMetrics(tb testing.TB, text string) metricsSnapshot {
	tb.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		tb.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// apiserverMetrics scrapes the apiserver with the admin client.
func apiserverMetrics(tb testing.TB, cs kubernetes.Interface) metricsSnapshot {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		tb.Fatalf("apiserver /metrics: %v", err)
	}
	return parseMetrics(tb, string(b))
}

// etcdMetrics scrapes the member's metrics listener (loopback, plain HTTP)
// from inside the control plane's namespace.
func etcdMetrics(tb testing.TB, cp *mastertest.ControlPlane) metricsSnapshot {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := cp.NS.Command(ctx, "curl", "-sf", "http://127.0.0.1:2381/metrics").Output()
	if err != nil {
		tb.Fatalf("etcd /metrics: %v", err)
	}
	return parseMetrics(tb, string(out))
}

// histogram is cumulative bucket counts by upper bound.
type histogram struct {
	bounds []float64
	counts []uint64
	count  uint64
}

// hist sums the histograms of name whose labels include all of match.
func (s metricsSnapshot) hist(name string, match map[string]string) histogram {
	var h histogram
	f, ok := s[name]
	if !ok {
		return h
	}
	for _, m := range f.Metric {
		if !labelsMatch(m.Label, match) || m.Histogram == nil {
			continue
		}
		if h.bounds == nil {
			for _, b := range m.Histogram.Bucket {
				h.bounds = append(h.bounds, b.GetUpperBound())
			}
			h.counts = make([]uint64, len(h.bounds))
		}
		for i, b := range m.Histogram.Bucket {
			if i < len(h.counts) {
				h.counts[i] += b.GetCumulativeCount()
			}
		}
		h.count += m.Histogram.GetSampleCount()
	}
	return h
}

func labelsMatch(ls []*dto.LabelPair, match map[string]string) bool {
	for k, v := range match {
		found := false
		for _, l := range ls {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sub is h minus an earlier scrape of the same histogram.
func (h histogram) sub(o histogram) histogram {
	out := histogram{bounds: h.bounds, count: h.count - o.count, counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		out.counts[i] = h.counts[i]
		if i < len(o.counts) {
			out.counts[i] -= o.counts[i]
		}
	}
	return out
}

// quantile is the upper bound of the bucket holding quantile q: an upper
// estimate, as fine as the buckets.
func (h histogram) quantile(q float64) float64 {
	if h.count == 0 {
		return math.NaN()
	}
	want := uint64(math.Ceil(q * float64(h.count)))
	for i, c := range h.counts {
		if c >= want {
			return h.bounds[i]
		}
	}
	return math.Inf(1)
}

func (h histogram) String() string {
	return fmt.Sprintf("n=%d p50≤%gs p99≤%gs", h.count, h.quantile(0.5), h.quantile(0.99))
}

// counterDelta sums the counter name by the values of label key between
// two scrapes.
func counterDelta(a, b metricsSnapshot, name string, keys ...string) map[string]float64 {
	sum := func(s metricsSnapshot) map[string]float64 {
		out := map[string]float64{}
		f, ok := s[name]
		if !ok {
			return out
		}
		for _, m := range f.Metric {
			var parts []string
			for _, k := range keys {
				for _, l := range m.Label {
					if l.GetName() == k {
						parts = append(parts, l.GetValue())
					}
				}
			}
			v := m.GetCounter().GetValue()
			if m.Summary != nil {
				v = float64(m.Summary.GetSampleCount())
			}
			out[strings.Join(parts, " ")] += v
		}
		return out
	}
	x, y := sum(a), sum(b)
	out := map[string]float64{}
	for k, v := range y {
		if d := v - x[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}
