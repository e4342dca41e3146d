package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Down removes a lab completely: machines (and every process in their
// cgroups), veths, bridge, cgroups in every hierarchy, any mount under the
// lab's directory, and the directory itself (the machines' layers and
// containerd directories with it); and, when it was the last lab on this
// host, gives back the kernel settings the labs changed (see lastOut). It
// works from what it finds as much as from the state, so it also cleans up
// after a crash or a lost state file, and removing a lab that is not there
// succeeds.
func (m *Manager) Down(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	p := m.paths(name)
	lock, err := lockFile(ctx, p.lock(), func() { say(m.progress, "lab %s: waiting for another anvil working on it", name) })
	if err != nil {
		return err
	}
	defer lock.unlock()

	var veths []string
	s, serr := loadState(p)
	if serr == nil {
		for _, ms := range s.Machines {
			veths = append(veths, ms.Veth)
		}
	}
	if err := killAll(ctx, name, ""); err != nil {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	if err := removeCgroups(ctx, name, ""); err != nil {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	links, err := labLinks(name, veths)
	if err != nil {
		return err
	}
	// Veths first: deleting one end of a pair deletes both.
	sort.SliceStable(links, func(i, j int) bool { return links[i].Type() != "bridge" && links[j].Type() == "bridge" })
	for _, l := range links {
		// A veth whose machine end just went away takes its host end with
		// it between the listing and here (ENODEV): gone is what we want.
		if err := netlink.LinkDel(l); err != nil && !errors.As(err, new(netlink.LinkNotFoundError)) && !errors.Is(err, syscall.ENODEV) {
			return fmt.Errorf("lab %s: delete %s: %w", name, l.Attrs().Name, err)
		}
	}
	if err := unmountUnder(p.dir); err != nil {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("lab %s: remove %s: %w", name, p.dir, err)
	}
	if err := os.Remove(p.lock()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	// Last, once this lab can no longer be counted as one still here.
	if err := m.lastOut(ctx); err != nil {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	return nil
}

// lastOut gives the host back what labs share, once no lab is left on it:
// none in this state directory, and no lab's cgroups or interfaces,
// whichever anvil or state directory made them. A lab that exists but is
// stopped still counts: starting it needs the kernel settings again. What
// goes: the kernel settings (their previous values back), the shared lock
// and the state directory if nothing else is in it.
func (m *Manager) lastOut(ctx context.Context) error {
	lock, err := lockFile(ctx, m.globalLock(), nil)
	if err != nil {
		return err
	}
	defer lock.unlock()
	others, err := m.labsOnHost()
	if err != nil {
		return err
	}
	if len(others) > 0 {
		if r, err := m.sysctls().load(); err == nil && len(r.Changed) > 0 {
			say(m.progress, "lab: host kernel settings stay changed for the labs still here: %s", strings.Join(others, ", "))
		}
		return nil
	}
	if err := m.sysctls().release(); err != nil {
		return err
	}
	// Removed while held: whoever waits on it starts over (lockFile).
	if err := removeIfExists(m.globalLock()); err != nil {
		return err
	}
	_ = os.Remove(m.stateDir) // fails while another lab's lock file is in it
	return nil
}

// labsOnHost names every lab that exists on this host.
func (m *Manager) labsOnHost() ([]string, error) {
	names := map[string]bool{}
	ents, err := os.ReadDir(m.stateDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list labs: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && ValidateName(e.Name()) == nil {
			names[e.Name()] = true
		}
	}
	for _, n := range labsFromCgroups() {
		names[n] = true
	}
	fromLinks, err := labsFromLinks()
	if err != nil {
		return nil, err
	}
	for _, n := range fromLinks {
		names[n] = true
	}
	return sortedKeys(names), nil
}

// DownAll removes every lab this machine has, including the remains of
// labs whose state is gone.
func (m *Manager) DownAll(ctx context.Context) error {
	names := map[string]bool{}
	ents, _ := os.ReadDir(m.stateDir)
	for _, e := range ents {
		n := strings.TrimSuffix(e.Name(), ".lock")
		if ValidateName(n) == nil {
			names[n] = true
		}
	}
	for _, n := range labsFromCgroups() {
		names[n] = true
	}
	fromLinks, err := labsFromLinks()
	if err != nil {
		return err
	}
	for _, n := range fromLinks {
		names[n] = true
	}
	var errs []error
	for _, n := range sortedKeys(names) {
		if ValidateName(n) != nil {
			continue
		}
		errs = append(errs, m.Down(ctx, n))
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// unmountUnder detaches every mount at or below dir in this mount
// namespace, deepest first. Machines mount their overlays in namespaces of
// their own, so normally there is none; this is for anything else.
func unmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, mp := range points {
		if err := unmount(mp); err != nil {
			return err
		}
	}
	return nil
}

func unmount(mp string) error {
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	return nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
