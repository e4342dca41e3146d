package component

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

// SystemdUnit renders c as a systemd service unit. all is every component
// the node runs; c.Requires are looked up in it for their unit names.
func SystemdUnit(c Spec, all []Spec) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	deps := []string{"network-online.target"}
	for _, r := range c.Requires {
		d, ok := find(all, r)
		if !ok {
			return nil, fmt.Errorf("component %s: requires %s, which this node does not run", c.Name, r)
		}
		deps = append(deps, d.UnitName())
	}

	var opts []*unit.UnitOption
	add := func(section, name, value string) {
		opts = append(opts, unit.NewUnitOption(section, name, value))
	}

	add("Unit", "Description", c.Description)
	// The apiserver and etcd bind the node's address, so they wait for the
	// network; Wants (not Requires) so that restarting a dependency does not
	// stop its dependents too — they retry on their own.
	add("Unit", "After", strings.Join(deps, " "))
	add("Unit", "Wants", strings.Join(deps, " "))
	// Never stop restarting: without this, five quick failures put the unit
	// in the failed state for good, and a control plane must keep trying
	// until the fault (a late disk, a slow etcd) is gone.
	add("Unit", "StartLimitIntervalSec", "0")

	if c.Notify {
		add("Service", "Type", "notify")
		// Only the daemon itself may report readiness.
		add("Service", "NotifyAccess", "main")
		if c.Watchdog > 0 {
			add("Service", "WatchdogSec", timespan(c.Watchdog))
		}
	} else {
		// exec (not simple) makes a missing or unexecutable binary fail the
		// start job instead of looking started.
		add("Service", "Type", "exec")
	}
	if c.User != "" && c.User != "root" {
		add("Service", "User", c.User)
	}
	for _, e := range c.Env {
		add("Service", "Environment", quoteExecWord(e.Name+"="+e.Value))
	}
	add("Service", "ExecStart", execStart(c))
	add("Service", "Restart", "always")
	if c.Restart.Delay > 0 {
		add("Service", "RestartSec", timespan(c.Restart.Delay))
	}
	if c.LimitNOFILE > 0 {
		add("Service", "LimitNOFILE", strconv.FormatUint(c.LimitNOFILE, 10))
	}
	if c.KeepChildren {
		add("Service", "KillMode", "process")
	}
	if c.Delegate {
		add("Service", "Delegate", "yes")
	}
	if c.OOMScoreAdjust != 0 {
		add("Service", "OOMScoreAdjust", strconv.Itoa(c.OOMScoreAdjust))
	}
	sandbox, err := sandboxOptions(c)
	if err != nil {
		return nil, err
	}
	for _, o := range sandbox {
		add("Service", o[0], o[1])
	}
	add("Install", "WantedBy", "multi-user.target")

	b, err := io.ReadAll(unit.Serialize(opts))
	if err != nil {
		return nil, fmt.Errorf("component %s: serialize unit: %w", c.Name, err)
	}
	return b, nil
}

// execStart puts one word per line, so a reviewer reads the flags as a list
// and a diff shows exactly the flag that changed.
func execStart(c Spec) string {
	words := c.Command()
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = quoteExecWord(w)
	}
	return strings.Join(quoted, " \\\n\t")
}

// quoteExecWord quotes w for ExecStart= and Environment=: $ is doubled so
// systemd does not expand it as a variable, and a lone ";" (which systemd
// reads as a command separator) is quoted; see quoteWord for the rest.
func quoteExecWord(w string) string {
	if w == ";" {
		return `";"`
	}
	return quoteWord(strings.ReplaceAll(w, "$", "$$"))
}

// quoteWord quotes w as one word of a setting systemd splits at spaces
// and expands specifiers in (ExecStart=, ReadWritePaths=): % is doubled,
// and a word holding spaces, quotes or backslashes, or an empty one, is
// double-quoted with C escapes.
func quoteWord(w string) string {
	w = strings.ReplaceAll(w, "%", "%%")
	if w != "" && !strings.ContainsAny(w, " \t\"'\\") {
		return w
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range w {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// timespan writes d the way systemd parses it.
func timespan(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

func find(cs []Spec, name string) (Spec, bool) {
	for _, c := range cs {
		if c.Name == name {
			return c, true
		}
	}
	return Spec{}, false
}
