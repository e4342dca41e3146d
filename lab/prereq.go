package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// PrerequisiteError says what this machine lacks for a lab and how to get
// it. Test helpers use it to tell "cannot run here" from a real failure.
type PrerequisiteError struct {
	Missing string // what is missing, for people
	Fix     string // the exact command that fixes it, if there is one
	Err     error  // why an automatic fix failed, if one was tried
}

func (e *PrerequisiteError) Error() string {
	msg := "lab needs " + e.Missing
	if e.Fix != "" {
		msg += "; run: " + e.Fix
	}
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg
}

func (e *PrerequisiteError) Unwrap() error { return e.Err }

// tool is a command the lab runs and the Debian package that ships it.
type tool struct{ cmd, pkg string }

func tools() []tool {
	return []tool{
		{"systemd-nspawn", "systemd-container"},
		{"debootstrap", "debootstrap"},
		{"mount", "mount"},
	}
}

// CheckPrerequisites verifies that the lab can run here: root, overlayfs,
// and the tools. With install set, missing Debian packages are installed
// with apt-get (and progress says so); otherwise the error names them.
func CheckPrerequisites(ctx context.Context, install bool, progress func(string)) error {
	if os.Geteuid() != 0 {
		return &PrerequisiteError{Missing: "root (it creates network namespaces, bridges, mounts and containers)", Fix: "sudo anvil lab …"}
	}
	if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(fs), "\toverlay\n") {
		return &PrerequisiteError{Missing: "overlayfs support in the kernel", Fix: "modprobe overlay"}
	}
	var pkgs []string
	for _, t := range tools() {
		if _, err := exec.LookPath(t.cmd); err != nil {
			pkgs = append(pkgs, t.pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	fix := "apt-get install -y --no-install-recommends " + strings.Join(pkgs, " ")
	missing := "the Debian packages " + strings.Join(pkgs, ", ")
	if !install {
		return &PrerequisiteError{Missing: missing, Fix: fix}
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return &PrerequisiteError{Missing: missing, Fix: "install them with this system's package manager"}
	}
	say(progress, "lab: installing %s with apt-get (needed for lab machines)", strings.Join(pkgs, " "))
	if err := aptInstall(ctx, pkgs); err != nil {
		return &PrerequisiteError{Missing: missing, Fix: "apt-get update && " + fix, Err: err}
	}
	for _, t := range tools() {
		if _, err := exec.LookPath(t.cmd); err != nil {
			return &PrerequisiteError{Missing: missing, Fix: fix, Err: fmt.Errorf("%s still not found after installing", t.cmd)}
		}
	}
	return nil
}

// aptInstall installs pkgs, refreshing the package lists once if the first
// try fails (a fresh machine often has none).
func aptInstall(ctx context.Context, pkgs []string) error {
	install := func() error {
		return run(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...)
	}
	if err := install(); err == nil {
		return nil
	}
	if err := run(ctx, "apt-get", "update"); err != nil {
		return err
	}
	return install()
}

// run runs a command and returns its error with the end of its output.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 1500 {
			msg = "…" + msg[len(msg)-1500:]
		}
		if msg != "" {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

func say(progress func(string), format string, args ...any) {
	if progress != nil {
		progress(fmt.Sprintf(format, args...))
	}
}

// IsPrerequisite reports whether err is a missing prerequisite.
func IsPrerequisite(err error) bool {
	var p *PrerequisiteError
	return errors.As(err, &p)
}
