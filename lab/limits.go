package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// sysctlFloor is a kernel setting a lab needs at least.
type sysctlFloor struct {
	path string
	min  int
}

// inotifyFloors are what many machines need at once: each machine's
// systemd, journald, udevd, logind and dbus, and the control plane's
// components, take inotify instances, and all of them count against root
// on this host. The kernel's default (128 instances) lasts for about a
// dozen machines across every lab running here; past it, a machine's
// systemd dies at boot with "Failed to allocate manager object: Too many
// open files". kind asks for the same floors.
func inotifyFloors() []sysctlFloor {
	return []sysctlFloor{
		{"/proc/sys/fs/inotify/max_user_instances", 8192},
		{"/proc/sys/fs/inotify/max_user_watches", 524288},
	}
}

// raiseLimits raises each setting below its floor to the floor, and never
// lowers one.
func raiseLimits(floors []sysctlFloor, progress func(string)) error {
	for _, f := range floors {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return fmt.Errorf("read %s: %w", f.path, err)
		}
		cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("read %s: %w", f.path, err)
		}
		if cur >= f.min {
			continue
		}
		if err := os.WriteFile(f.path, []byte(strconv.Itoa(f.min)+"\n"), 0o644); err != nil {
			return fmt.Errorf("raise %s from %d to %d (machines' systemd need inotify instances): %w", f.path, cur, f.min, err)
		}
		say(progress, "raised %s from %d to %d: every machine's systemd takes inotify instances", f.path, cur, f.min)
	}
	return nil
}
