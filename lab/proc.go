package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment of the boot wrapper and systemd-nspawn, so `down` finds them
// even in the instant before they join their cgroups.
const (
	envLab     = "ANVIL_LAB"
	envMachine = "ANVIL_LAB_MACHINE"
)

// procStart returns a process's start time (clock ticks after boot) and
// state letter, which together with the PID identify it.
func procStart(pid int) (uint64, byte, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields count from
	// the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return start, f[0][0], nil
}

// alive reports whether pid is still the process that started at start.
// A zombie (a machine nobody reaped yet) is not alive.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, state, err := procStart(pid)
	return err == nil && st == start && state != 'Z' && state != 'X'
}

// machinePIDs lists the processes of a machine (of the whole lab when
// machine is ""): members of its cgroups, and processes whose environment
// names it.
func machinePIDs(lab, machine string) []int {
	seen := map[int]bool{}
	for _, dir := range cgroupPaths(lab, machine) {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	for _, pid := range envPIDs(lab, machine) {
		seen[pid] = true
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

func envPIDs(lab, machine string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ownsProcess(pid, lab, machine) {
			out = append(out, pid)
		}
	}
	return out
}

// ownsProcess checks, for a PID about to be signalled, that it belongs to
// the machine: by cgroup or by environment.
func ownsProcess(pid int, lab, machine string) bool {
	if cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
		want := "/" + cgroupDir + "/" + lab + "/"
		if machine != "" {
			want += machine + "/"
		}
		for _, line := range strings.Split(string(cg), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && strings.HasPrefix(parts[2]+"/", want) {
				return true
			}
		}
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	vars := bytes.Split(env, []byte{0})
	hasLab, hasMachine := false, machine == ""
	for _, v := range vars {
		switch string(v) {
		case envLab + "=" + lab:
			hasLab = true
		case envMachine + "=" + machine:
			hasMachine = true
		}
	}
	return hasLab && hasMachine
}

// signal sends sig to pid through a pidfd, after checking (with the pidfd
// held, so the PID cannot be reused in between) that the process is the
// machine's.
func signal(pid int, sig syscall.Signal, lab, machine string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("pidfd %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !ownsProcess(pid, lab, machine) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	return nil
}

// killAll SIGKILLs every process of the machine (the lab when machine is
// "") until none is left. Killing a container's init ends its whole PID
// namespace; nspawn then exits on its own.
func killAll(ctx context.Context, lab, machine string) error {
	thaw(lab, machine)
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := machinePIDs(lab, machine)
		live := pids[:0]
		for _, pid := range pids {
			if _, state, err := procStart(pid); err == nil && state != 'Z' && state != 'X' {
				live = append(live, pid)
			}
		}
		if len(live) == 0 {
			return nil
		}
		for _, pid := range live {
			if err := signal(pid, syscall.SIGKILL, lab, machine); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of %s still running after SIGKILL: %v", strings.TrimSuffix(lab+"/"+machine, "/"), live)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pss sums the proportional set size of pids, in bytes: each process's
// private memory plus its share of what it shares, so machines sharing the
// base's libraries are not each charged for all of them.
func pss(pids []int) uint64 {
	var total uint64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}
