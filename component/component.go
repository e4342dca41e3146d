package component

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"strings"
	"time"
)

// Spec is one program anvil runs, declared once and rendered as a
// systemd unit, a static pod or a supervised process.
type Spec struct {
	// Name identifies the component: the static pod, the process and the
	// key dependencies refer to ("etcd", "kube-apiserver").
	Name string
	// Unit is the systemd unit name; empty means Name + ".service". anvil's
	// own daemons carry an "anvil-" prefix so they are easy to tell apart
	// from units a distribution ships.
	Unit        string
	Description string
	// Binary is the absolute path of the executable on the host.
	Binary string
	// Subcommand are the words between the binary and the flags, such as
	// "etcd" in `anvil etcd --config …`.
	Subcommand []string
	// Args are the flags, rendered in this order in every form, so output is
	// deterministic and reviewable.
	Args []Arg
	// Env is the environment, in order.
	Env []EnvVar
	// Files are what the component reads or writes: the static pod mounts
	// them and an operator reviews them.
	Files []File
	// Ports are what the component listens on; preflight checks them.
	Ports  []Port
	Health Health
	// User runs the component; empty means root.
	User    string
	Restart RestartPolicy
	// Requires names the components that must be started before this one.
	Requires []string
	// Notify marks anvil's own daemons, which tell systemd through sd_notify
	// when they are ready (Type=notify) and ping its watchdog.
	Notify bool
	// Watchdog is how long systemd waits between watchdog pings of a Notify
	// daemon before it restarts it; zero turns the watchdog off.
	Watchdog time.Duration
	// Image is the container image for the static-pod form.
	Image Image
	// LimitNOFILE is the open-file limit; zero keeps the default.
	LimitNOFILE uint64
	// Capabilities are the Linux capabilities the component needs, written
	// as Kubernetes does (NET_ADMIN): the VIP manager adds addresses and
	// sends raw ARP. They are a confined unit's whole bounding set (see
	// Sandbox); the static pod adds them to its container's defaults;
	// processes run as root and have every capability already.
	Capabilities []string
	// Requests are the static pod's resource requests. They keep it out of
	// the BestEffort class, whose pods the kernel OOM-kills first.
	Requests Requests
	// KeepChildren leaves the processes the component started running when
	// it stops or restarts: containerd's shims and the containers they run
	// outlive a containerd restart (systemd's KillMode=process; the
	// supervisor signals the main process only).
	KeepChildren bool
	// Delegate hands the component the cgroup subtree below its own, to
	// manage itself (the kubelet and containerd create pods' cgroups).
	Delegate bool
	// OOMScoreAdjust makes the kernel's OOM killer spare the component
	// before workloads (negative) or pick it first (positive); zero keeps
	// the default.
	OOMScoreAdjust int
	// Sandbox is how systemd confines the unit; the zero value confines it
	// fully (see Sandbox).
	Sandbox Sandbox
}

// Arg is one flag, rendered as --Name=Value.
type Arg struct {
	Name  string
	Value string
}

// String renders the flag as it appears on a command line.
func (a Arg) String() string { return "--" + a.Name + "=" + a.Value }

// EnvVar is one environment variable.
type EnvVar struct {
	Name  string
	Value string
}

// File is a file or directory a component uses.
type File struct {
	// Path is absolute, as the component sees it.
	Path string
	// Mode is the mode the file should have; review and preflight compare it.
	Mode fs.FileMode
	// Dir marks a directory. A static pod mounts a directory rather than the
	// files in it when the files are replaced while the component runs
	// (certificates are renewed by rename, and a bind-mounted file would keep
	// showing the old inode).
	Dir bool
	// Writable marks what the component writes (data, logs); everything
	// else is mounted read-only.
	Writable bool
	// Secret marks keys and anything holding key material.
	Secret bool
}

// Port is a port a component listens on.
type Port struct {
	Name string
	// Address is the address it binds; empty means all addresses.
	Address  string
	Number   uint16
	Protocol string
}

// Probe is an HTTP(S) health check.
type Probe struct {
	URL string `json:"url"`
	// CAFile verifies the server certificate; ClientCertFile and
	// ClientKeyFile authenticate the prober when the endpoint needs it.
	CAFile         string `json:"caFile,omitempty"`
	ClientCertFile string `json:"clientCertFile,omitempty"`
	ClientKeyFile  string `json:"clientKeyFile,omitempty"`
	// InsecureSkipVerify is set for components that serve a self-signed
	// certificate made at start, where there is nothing to verify against.
	// Health endpoints carry no secrets, so this costs nothing.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// Health holds a component's probes.
type Health struct {
	// Live fails when the process should be restarted.
	Live *Probe `json:"live,omitempty"`
	// Ready fails until the component can serve; callers wait on it.
	Ready *Probe `json:"ready,omitempty"`
}

// RestartPolicy is how a component is restarted when it exits. Components
// are always restarted: a control plane that gives up is worse than one that
// keeps trying.
type RestartPolicy struct {
	// Delay is the wait before the first restart.
	Delay time.Duration
	// MaxDelay caps the doubling backoff of anvil's supervisor. systemd 252
	// (Debian 12) has only a fixed RestartSec, so units use Delay alone.
	MaxDelay time.Duration
}

// Image is the static-pod form's container image.
type Image struct {
	Ref string
	// Binary is the executable's path inside the image.
	Binary string
}

// Requests are a static pod's resource requests, as Kubernetes quantities.
type Requests struct {
	CPU    string
	Memory string
}

// UnitName is the systemd unit the component runs as.
func (c Spec) UnitName() string {
	if c.Unit != "" {
		return c.Unit
	}
	return c.Name + ".service"
}

// Command is the full command line: binary, subcommand, then the flags.
func (c Spec) Command() []string {
	out := append([]string{c.Binary}, c.Subcommand...)
	return append(out, c.ArgStrings()...)
}

// ArgStrings renders the flags in order.
func (c Spec) ArgStrings() []string {
	out := make([]string, len(c.Args))
	for i, a := range c.Args {
		out[i] = a.String()
	}
	return out
}

// Arg returns the value of the first flag called name.
func (c Spec) Arg(name string) (string, bool) {
	for _, a := range c.Args {
		if a.Name == name {
			return a.Value, true
		}
	}
	return "", false
}

// Validate checks what every renderer relies on, so that a mistake in a
// declaration fails before anything is written.
func (c Spec) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !validName(c.Name) {
		bad("name %q must be lowercase letters, digits and dashes", c.Name)
	}
	if !path.IsAbs(c.Binary) {
		bad("binary %q is not an absolute path", c.Binary)
	}
	for _, a := range c.Args {
		if err := checkFlagName(a.Name); err != nil {
			bad("flag %q: %v", a.Name, err)
		}
		if err := checkValue(a.Value); err != nil {
			bad("flag --%s: %v", a.Name, err)
		}
	}
	for _, e := range c.Env {
		if e.Name == "" || strings.ContainsAny(e.Name, "= \t\n") {
			bad("environment variable name %q is invalid", e.Name)
		}
		if err := checkValue(e.Value); err != nil {
			bad("environment variable %s: %v", e.Name, err)
		}
	}
	for _, f := range c.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			bad("file %q is not a clean absolute path", f.Path)
		}
	}
	for _, p := range []*Probe{c.Health.Live, c.Health.Ready} {
		if p == nil {
			continue
		}
		if _, err := parseProbeURL(p.URL); err != nil {
			bad("probe: %v", err)
		}
	}
	for _, r := range c.Requires {
		if r == c.Name {
			bad("requires itself")
		}
	}
	for _, x := range c.Capabilities {
		if !validCapability(x) {
			bad("capability %q must be written as Kubernetes does, such as NET_ADMIN", x)
		}
	}
	if c.Delegate && !c.Sandbox.Unconfined {
		bad("a delegated cgroup subtree needs an unconfined unit: the sandbox makes the cgroup tree read-only")
	}
	if c.Watchdog != 0 && !c.Notify {
		bad("a watchdog needs a Notify daemon")
	}
	if c.Restart.MaxDelay != 0 && c.Restart.MaxDelay < c.Restart.Delay {
		bad("restart max delay %s is below the delay %s", c.Restart.MaxDelay, c.Restart.Delay)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("component %s: %w", c.Name, err)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// checkValue refuses characters no form can carry safely: a newline would
// end a unit-file line and a NUL ends a C string in argv.
func checkValue(v string) error {
	if strings.ContainsAny(v, "\n\r\x00") {
		return errors.New("value contains a newline or NUL")
	}
	return nil
}

// parseProbeURL accepts http and https URLs with an explicit port, which
// static-pod probes need.
func parseProbeURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url %q: scheme must be http or https", raw)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("url %q: needs a host and a port", raw)
	}
	return u, nil
}
