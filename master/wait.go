package master

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// crashLoopRestarts is how many restarts during a wait mean a component
// will not come up by itself.
const crashLoopRestarts = 3

// NotReadyError says which components did not become ready, and why.
type NotReadyError struct {
	Components []string
	Reason     string
	// LogTail is the end of the first failing component's log.
	LogTail string
}

func (e *NotReadyError) Error() string {
	s := fmt.Sprintf("%s not ready: %s", strings.Join(e.Components, ", "), e.Reason)
	if e.LogTail != "" {
		s += "\n--- last lines of its log ---\n" + e.LogTail
	}
	return s
}

// WaitReady polls the readiness probes of cs until all pass, a component
// crash-loops, or timeout passes. A component that does not come up is a
// *NotReadyError with the end of its log.
func (c *ControlPlane) WaitReady(ctx context.Context, cs []component.Spec, timeout time.Duration) error {
	probe := supervise.NewProber()
	defer probe.Close()
	started := time.Now()
	deadline := started.Add(timeout)
	ready := map[string]bool{}
	lastErr := map[string]error{}
	baseline := map[string]int{}
	lastReport := time.Now()
	for {
		var waiting []string
		for _, s := range cs {
			if ready[s.Name] || s.Health.Ready == nil {
				continue
			}
			if err := probe.Check(ctx, *s.Health.Ready, 2*time.Second); err != nil {
				lastErr[s.Name] = err
				waiting = append(waiting, s.Name)
				continue
			}
			ready[s.Name] = true
			c.log().Debug("component ready", "component", s.Name, "after", time.Since(started))
		}
		if len(waiting) == 0 {
			return nil
		}
		// Restarts count from the wait's start: a unit switched out of a
		// crash loop (an upgrade rolled back) carries its old count.
		for name, n := range c.restartCounts(ctx, waiting) {
			if _, ok := baseline[name]; !ok {
				baseline[name] = n
			}
			if restarts := n - baseline[name]; restarts >= crashLoopRestarts {
				return &NotReadyError{Components: []string{name}, Reason: fmt.Sprintf("crash-looping (%d restarts): %v", restarts, lastErr[name]), LogTail: c.logTail(name)}
			}
		}
		if time.Now().After(deadline) {
			return &NotReadyError{Components: waiting, Reason: fmt.Sprintf("still failing after %s: %v", timeout, lastErr[waiting[0]]), LogTail: c.logTail(waiting[0])}
		}
		if time.Since(lastReport) > 10*time.Second {
			c.Task.Say("waiting for %s", strings.Join(waiting, ", "))
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// restartCounts are how often each component among names was restarted
// by its supervisor (systemd, anvil's), as far as it can be read.
func (c *ControlPlane) restartCounts(ctx context.Context, names []string) map[string]int {
	out := map[string]int{}
	switch c.Layout {
	case v1alpha1.LayoutProcess:
		st, err := supervise.ReadStatus(c.Root)
		if err != nil {
			return out
		}
		for _, n := range names {
			if p, ok := st.Process(n); ok {
				out[n] = p.Restarts
			}
		}
	case v1alpha1.LayoutSystemd:
		units := map[string]string{}
		cs, _ := c.Components(names...)
		for _, s := range cs {
			units[s.UnitName()] = s.Name
		}
		var list []string
		for u := range units {
			list = append(list, u)
		}
		states, err := layout.SystemdStates(ctx, list)
		if err != nil {
			return out
		}
		for _, s := range states {
			out[units[s.Name]] = int(s.Restarts)
		}
	}
	return out
}

// logTail is the end of a component's log: its file in the process layout,
// the journal under systemd.
func (c *ControlPlane) logTail(name string) string {
	switch c.Layout {
	case v1alpha1.LayoutProcess:
		b, err := os.ReadFile(filepath.Join(ProcessOptions(c.Plan).LogDir, name+".log"))
		if err != nil {
			return ""
		}
		return lastLines(b, 15)
	case v1alpha1.LayoutSystemd:
		cs, _ := c.Components(name)
		for _, s := range cs {
			out, _ := exec.Command("journalctl", "-u", s.UnitName(), "-n", "15", "--no-pager", "-o", "cat").Output()
			return strings.TrimSpace(string(out))
		}
	}
	return ""
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// WaitLeaders waits until the controller-manager and the scheduler hold
// their leader leases: the control plane is doing its job.
func (c *ControlPlane) WaitLeaders(ctx context.Context, timeout time.Duration) error {
	// super-admin.conf where it is (the first master, which waits before
	// the RBAC admin.conf needs exists), admin.conf on the others.
	kc := pki.SuperAdminKubeconfig
	if ok, _ := fsutil.Exists(c.Root.Kubeconfig(kc)); !ok {
		kc = pki.AdminKubeconfig
	}
	cli, err := c.Client(kc)
	if err != nil {
		return err
	}
	return waitLeaders(ctx, cli, timeout, ControllerManager, Scheduler)
}

// waitLeaders waits until each named component holds its leader lease in
// kube-system and has renewed it recently: the controller-manager and the
// scheduler are doing their jobs, not merely answering /healthz.
func waitLeaders(ctx context.Context, cs kubernetes.Interface, timeout time.Duration, names ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		var missing []string
		var lastErr error
		for _, n := range names {
			l, err := cs.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				missing, lastErr = append(missing, n), err
				continue
			}
			if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || l.Spec.RenewTime == nil ||
				time.Since(l.Spec.RenewTime.Time) > time.Duration(derefInt32(l.Spec.LeaseDurationSeconds, 15))*time.Second {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			reason := "no current holder"
			if lastErr != nil {
				reason = lastErr.Error()
			}
			return &NotReadyError{Components: missing, Reason: "leader lease: " + reason}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func derefInt32(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}
