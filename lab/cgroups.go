package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Every machine runs in cgroups of its own, anvil-lab/LAB/MACHINE in every
// cgroup hierarchy the host has mounted: the named systemd one and the
// unified one, which systemd-nspawn uses, and each v1 controller (cpu,
// cpuset, memory, pids, …). nspawn gives the machine a cgroup namespace, so
// inside, these are its root: its systemd manages its own units, and
// containerd and the kubelet create their cgroups (kubepods, …) under the
// machine's and not in the host's root, where every worker's kubelet would
// fight over the same ones. They also make a machine's processes easy to
// find: whatever is in its cgroups is it, even after a crash lost the PIDs.
const cgroupDir = "anvil-lab"

// hierarchy is one cgroup hierarchy mounted on the host.
type hierarchy struct {
	Mount string // where, e.g. /sys/fs/cgroup/cpuset
	V2    bool
	// Controllers are the v1 controllers bound to it (name=systemd for the
	// named one); none for v2.
	Controllers []string
}

func (h hierarchy) has(controller string) bool { return slices.Contains(h.Controllers, controller) }

// cgroupHierarchies lists the host's cgroup hierarchies, each once.
func cgroupHierarchies() []hierarchy {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	return parseHierarchies(string(data))
}

// parseHierarchies reads mountinfo: every cgroup and cgroup2 mount of a
// hierarchy's root, and of each hierarchy only its first mount (one
// mounted twice is the same cgroups twice).
func parseHierarchies(mountinfo string) []hierarchy {
	var out []hierarchy
	seen := map[string]bool{}
	for _, line := range strings.Split(mountinfo, "\n") {
		// ID parent major:minor root mountpoint options [optional…] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || pf[3] != "/" || (qf[0] != "cgroup" && qf[0] != "cgroup2") || seen[pf[2]] {
			continue
		}
		seen[pf[2]] = true
		h := hierarchy{Mount: unescapeMount(pf[4]), V2: qf[0] == "cgroup2"}
		if !h.V2 {
			for _, o := range strings.Split(qf[2], ",") {
				if isController(o) {
					h.Controllers = append(h.Controllers, o)
				}
			}
		}
		out = append(out, h)
	}
	return out
}

// isController tells a v1 controller (or name=) from the mount options a
// cgroup super block also lists.
func isController(opt string) bool {
	switch {
	case strings.HasPrefix(opt, "name="):
		return true
	case opt == "rw" || opt == "ro" || opt == "xattr" || opt == "noprefix" || opt == "cpuset_v2_mode" || opt == "favordynmods" ||
		strings.HasPrefix(opt, "release_agent=") || strings.HasPrefix(opt, "clone_children") || strings.Contains(opt, "="):
		return false
	}
	return true
}

// cgroupPaths is where lab's machine (every machine when machine is "")
// lives in each hierarchy.
func cgroupPaths(lab, machine string) []string {
	var out []string
	for _, h := range cgroupHierarchies() {
		out = append(out, filepath.Join(h.Mount, cgroupDir, lab, machine))
	}
	return out
}

// ensureCgroups creates the machine's cgroup in every hierarchy, with its
// parents, and returns them. A v1 cpuset cgroup starts with no CPUs and no
// memory nodes, and refuses processes until it has some: each level gets
// its parent's.
func ensureCgroups(lab, machine string) ([]string, error) {
	var out []string
	for _, h := range cgroupHierarchies() {
		var err error
		// A `down` of the last other lab may remove anvil-lab between two
		// levels: start that hierarchy over.
		for try := 0; try < 5; try++ {
			if err = ensureCgroup(h, lab, machine); !errors.Is(err, fs.ErrNotExist) {
				break
			}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, filepath.Join(h.Mount, cgroupDir, lab, machine))
	}
	return out, nil
}

func ensureCgroup(h hierarchy, lab, machine string) error {
	dir := h.Mount
	for _, level := range []string{cgroupDir, lab, machine} {
		parent := dir
		dir = filepath.Join(dir, level)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if !h.has("cpuset") {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if err := inheritCgroupFile(parent, dir, f); err != nil {
				return err
			}
		}
	}
	if h.has("cpu") {
		return weighCPU(h.Mount)
	}
	return nil
}

// machineCPUShares is a machine's weight in the v1 cpu controller: that
// of the host threads of a VM with as many vCPUs as the host has cores,
// which is what a machine looks like from inside. A cgroup competes with
// its siblings as one; with the default 1024 at anvil-lab, every lab
// machine together would weigh as much as one process of the host, and a
// lab booting beside a busy compile took twice as long.
func machineCPUShares() int { return 1024 * runtime.NumCPU() }

// maxCPUShares is the kernel's ceiling for cpu.shares.
const maxCPUShares = 262144

// weighCPU gives each machine's cpu cgroup machineCPUShares, and each lab
// and anvil-lab itself the sum of the machines beneath, so that the
// machines weigh against the host's processes as if they were each
// directly beside them. It counts what is there, so concurrent labs agree.
func weighCPU(root string) error {
	per := machineCPUShares()
	top := filepath.Join(root, cgroupDir)
	labs, err := os.ReadDir(top)
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", top, err)
	}
	total := 0
	for _, l := range labs {
		if !l.IsDir() {
			continue
		}
		machines, _ := os.ReadDir(filepath.Join(top, l.Name()))
		n := 0
		for _, m := range machines {
			if m.IsDir() {
				n++
				_ = writeShares(filepath.Join(top, l.Name(), m.Name()), per)
			}
		}
		total += n
		_ = writeShares(filepath.Join(top, l.Name()), n*per)
	}
	return writeShares(top, total*per)
}

func writeShares(dir string, shares int) error {
	shares = min(max(shares, 2), maxCPUShares)
	p := filepath.Join(dir, "cpu.shares")
	if err := os.WriteFile(p, []byte(strconv.Itoa(shares)), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set %s to %d: %w", p, shares, err)
	}
	return nil
}

// inheritCgroupFile copies parent/name to dir/name if dir's is empty.
func inheritCgroupFile(parent, dir, name string) error {
	cur, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if strings.TrimSpace(string(cur)) != "" {
		return nil
	}
	val, err := os.ReadFile(filepath.Join(parent, name))
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", parent, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), val, 0o644); err != nil {
		return fmt.Errorf("cgroup %s: copy %s %q from its parent: %w", dir, name, strings.TrimSpace(string(val)), err)
	}
	return nil
}

// thaw unfreezes every frozen cgroup of the machine (the lab when machine
// is ""): a frozen process does not die of SIGKILL until thawed, and
// containerd freezes containers it pauses.
func thaw(lab, machine string) {
	for _, dir := range cgroupPaths(lab, machine) {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			for file, thawed := range map[string]string{"freezer.state": "THAWED", "cgroup.freeze": "0"} {
				if cur, err := os.ReadFile(filepath.Join(p, file)); err == nil && strings.TrimSpace(string(cur)) != thawed {
					_ = os.WriteFile(filepath.Join(p, file), []byte(thawed), 0o644)
				}
			}
			return nil
		})
	}
}

// removeCgroups removes the machine's (or lab's) cgroup directories in
// every hierarchy, deepest first, including any the machine made inside
// (kubepods, system.slice, …); a cgroup only goes once its processes are
// gone.
func removeCgroups(ctx context.Context, lab, machine string) error {
	var lastErr error
	for try := 0; try < 100; try++ {
		lastErr = nil
		for _, dir := range cgroupPaths(lab, machine) {
			if err := rmdirTree(dir); err != nil {
				lastErr = err
			}
		}
		if lastErr == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if lastErr != nil {
		return lastErr
	}
	// Parents left empty: the lab's, then anvil-lab itself.
	for _, h := range cgroupHierarchies() {
		for _, d := range []string{filepath.Join(h.Mount, cgroupDir, lab), filepath.Join(h.Mount, cgroupDir)} {
			_ = unix.Rmdir(d) // fails while other machines or labs use it, as it should
		}
		if h.has("cpu") {
			_ = weighCPU(h.Mount) // fewer machines weigh less; gone is fine too
		}
	}
	return nil
}

func rmdirTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		// cgroup directories hold only kernel files: rmdir, never unlink.
		if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
		}
	}
	return nil
}

// labsFromCgroups names the labs that have cgroups in any hierarchy.
func labsFromCgroups() []string {
	seen := map[string]bool{}
	for _, h := range cgroupHierarchies() {
		ents, _ := os.ReadDir(filepath.Join(h.Mount, cgroupDir))
		for _, e := range ents {
			if e.IsDir() {
				seen[e.Name()] = true
			}
		}
	}
	return sortedKeys(seen)
}
