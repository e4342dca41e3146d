package master

import (
	"context"
	"fmt"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
)

// RenewPeriod is how often a master looks for due certificates: a tenth
// of pki.certValidity, between 10 seconds and an hour (whole seconds under
// a minute, whole minutes above), so a certificate is renewed well within
// the third of its life left when it falls due.
func RenewPeriod(c *v1alpha1.Cluster) time.Duration {
	d := min(max(c.PKI.CertValidity.Duration/10, 10*time.Second), time.Hour)
	if d < time.Minute {
		return d.Truncate(time.Second)
	}
	return d.Truncate(time.Minute)
}

// renewCalendar is RenewPeriod as systemd's OnCalendar.
func renewCalendar(c *v1alpha1.Cluster) string {
	switch d := RenewPeriod(c); {
	case d < time.Minute:
		return fmt.Sprintf("*:*:0/%d", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("*:0/%d", int(d/time.Minute))
	default:
		return "hourly"
	}
}

// renewJob is the renewal timer of p's master: every master runs it, and
// the masters take turns through RenewLease.
func renewJob(p Plan) component.ScheduledJob {
	return component.ScheduledJob{
		Name:        RenewJobName,
		Description: "anvil renews the certificates of cluster " + p.Cluster.Name + " that are due",
		Command:     []string{p.AnvilBinary, "certs", "renew-due", "--log-format", "json"},
		OnCalendar:  renewCalendar(p.Cluster),
		Persistent:  true,
		// On time within a tenth of the period.
		Accuracy: max(RenewPeriod(p.Cluster)/10, time.Second),
		After:    []string{"anvil-etcd.service", "kube-apiserver.service"},
		Timeout:  30 * time.Minute,
		// It restarts the control plane's components (systemd's
		// D-Bus wants CAP_SYS_ADMIN for that, or the supervisor's
		// processes signalled) and moves static pods' manifests: it
		// manages the machine's components as the agent does.
		Sandbox: component.Sandbox{Unconfined: true},
	}
}

// renewLoop is the process layout's renewal timer: anvil's supervisor
// runs `anvil certs renew-due --loop`.
func renewLoop(p Plan) component.Spec {
	return component.Spec{
		Name:        RenewJobName,
		Description: "anvil renews the certificates of cluster " + p.Cluster.Name + " that are due, every " + RenewPeriod(p.Cluster).String(),
		Binary:      p.AnvilBinary,
		Subcommand:  []string{"certs", "renew-due"},
		Args: []component.Arg{
			{Name: "loop", Value: "true"},
			{Name: "root", Value: string(p.Root)},
			{Name: "log-format", Value: "json"},
		},
		Restart: component.RestartPolicy{Delay: 10 * time.Second, MaxDelay: 5 * time.Minute},
	}
}

// RenewScheduleUnits renders what renews p's master's certificates in
// layout: the systemd timer and its service, or in the process layout the
// supervised loop's spec; nothing on a worker (its kubelet renews its
// certificates through the API).
func RenewScheduleUnits(p Plan, l v1alpha1.Layout) ([]component.OutputFile, error) {
	p, err := p.Complete()
	if err != nil {
		return nil, err
	}
	if !p.Node.IsMaster() {
		return nil, nil
	}
	if l == v1alpha1.LayoutProcess {
		return component.Processes([]component.Spec{renewLoop(p)}, ProcessOptions(p))
	}
	return component.TimerUnits(renewJob(p))
}

// EnsureRenewSchedule writes and starts this master's renewal timer (or,
// in the process layout, its loop). It runs at the end of init and join.
func EnsureRenewSchedule(ctx context.Context, p Plan, l v1alpha1.Layout, root hostfs.Root) (ScheduleResult, error) {
	p, err := p.Complete()
	if err != nil {
		return ScheduleResult{}, err
	}
	files, err := RenewScheduleUnits(p, l)
	if err != nil {
		return ScheduleResult{}, err
	}
	return ensureSchedule(ctx, p, l, root, scheduled{what: "certificate renewal", name: RenewJobName, files: files,
		loopNote: "anvil's supervisor renews certificates that are due every " + RenewPeriod(p.Cluster).String() + " (anvil certs renew-due --loop)"})
}
