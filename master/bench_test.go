package master_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"anvil.dev/anvil/internal/benchreport"
	"anvil.dev/anvil/master/mastertest"
)

// readyLine is init's progress line that says when everything was ready.
var readyLine = regexp.MustCompile(`control plane ready after ([0-9.]+m?s)`)

// BenchmarkInitToReady measures what the issue asks: from the start of
// `anvil init` until etcd and the apiserver are ready and both the
// controller-manager and the scheduler hold their leader leases; the median
// of five fresh inits, each in a new namespace and root. Then the peak RSS
// of each component of the last control plane after it has settled.
func BenchmarkInitToReady(b *testing.B) {
	const runs = 5
	anvil := mastertest.BuildAnvil(b)
	var ready []time.Duration
	var last *mastertest.ControlPlane
	for i := range runs {
		cp := mastertest.Start(b, mastertest.Options{Anvil: anvil})
		m := readyLine.FindStringSubmatch(cp.InitOutput)
		if m == nil {
			b.Fatalf("run %d: no ready line in init's output:\n%s", i, cp.InitOutput)
		}
		d, err := time.ParseDuration(m[1])
		if err != nil {
			b.Fatal(err)
		}
		ready = append(ready, d)
		b.Logf("run %d: ready after %s (init command %s)", i, d, cp.InitElapsed.Round(time.Millisecond))
		if i < runs-1 {
			cp.Reset(b)
		}
		last = cp
	}
	slices.Sort(ready)
	median := ready[len(ready)/2]
	benchreport.Report(b, benchreport.Figure{
		Name: "init-to-ready (median of 5)", Value: median.Seconds(), Unit: "s", Anchor: 6,
		Note: fmt.Sprintf("target; kubeadm init takes 40-55 s; runs %v", ready),
	})

	// Peak RSS once the control plane has settled.
	time.Sleep(15 * time.Second)
	st := statusOf(b, last)
	anchors := map[string]float64{"etcd": 200, "kube-apiserver": 600, "kube-controller-manager": 200, "kube-scheduler": 150}
	for _, c := range st.Components {
		hwm, err := vmHWM(c.PID)
		if err != nil {
			b.Fatalf("%s: %v", c.Name, err)
		}
		benchreport.Report(b, benchreport.Figure{
			Name: "peak RSS " + c.Name, Value: hwm, Unit: "MiB", Anchor: anchors[c.Name],
			Note: "budget for an idle single-master control plane",
		})
	}
}

// vmHWM is a process's peak resident set, in MiB.
func vmHWM(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}
