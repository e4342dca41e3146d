package master

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/podnet"
	"anvil.dev/anvil/supervise"
)

// podRemovalTimeout bounds `crictl rmp -af`: a containerd that does not
// answer by then gets its pods killed instead.
const podRemovalTimeout = 90 * time.Second

// nodeReset is what reset does to a machine's node stack (containerd, the
// kubelet, their pods and the pod network), worked out before anything is
// touched so that a dry run lists exactly what a real run does.
type nodeReset struct {
	// Installed is false when no file of the node stack is here; reset
	// then leaves the node stack's paths alone.
	Installed bool
	// Socket is containerd's; Crictl removes the pods through it.
	Socket, Crictl string
	// KubeProxy removes the rules kube-proxy wrote (kube-proxy --cleanup).
	KubeProxy string
	// BinRoot holds the releases' binaries: a shim whose executable is in
	// one of them is anvil's.
	BinRoot string
	// Units are the node stack's unit files that exist here.
	Units []string
	// Specs are its process specs that exist here.
	Specs []string
	// Unmount lists the mount points inside the node stack's trees,
	// deepest first.
	Unmount []string
	// Remove lists what is removed.
	Remove []string
	// Empty lists trees that are mount points (a disk, or a directory the
	// lab gives): what is inside them is removed, they stay.
	Empty []string
}

// nodeTrees are the node stack's directories reset unmounts under and
// removes, as host paths.
func nodeTrees() []string {
	return []string{node.KubeletDir, node.ContainerdStateDir, node.ContainerdRootDir}
}

// planNodeReset works out reset's work on the node stack under root, with
// mounts the machine's mount points (absolute paths).
func planNodeReset(root hostfs.Root, mounts []string) nodeReset {
	var p nodeReset
	exists := func(path string) bool { ok, _ := fsutil.Exists(path); return ok }
	for _, c := range OwnedNodeStack() {
		if u := filepath.Join(root.Units(), c.UnitName()); exists(u) {
			p.Units = append(p.Units, u)
		}
		if s := filepath.Join(root.Path(component.ProcessSpecDir), c.Name+".json"); exists(s) {
			p.Specs = append(p.Specs, s)
		}
	}
	files := []string{
		filepath.Dir(node.ContainerdConfigFile),
		node.KubeletKubeconfig,
		node.KubeProxyConfigFile,
		podnet.CNIConfigPath,
		filepath.Join(podnet.HostLocalDataDir, podnet.NetworkName),
	}
	p.Installed = len(p.Units) > 0 || len(p.Specs) > 0
	for _, f := range append(files, node.KubeletConfigFile) {
		p.Installed = p.Installed || exists(root.Path(f))
	}
	if !p.Installed {
		return p
	}
	p.Socket = root.Path(node.ContainerdSocket)
	p.BinRoot = root.Path(hostfs.BinDir)
	p.Crictl = newestBinary(p.BinRoot, images.Crictl)
	p.KubeProxy = newestBinary(p.BinRoot, images.KubeProxy)
	p.Unmount = mountsInsideTrees(root, mounts)
	for _, t := range nodeTrees() {
		tree := root.Path(t)
		switch {
		case !exists(tree):
		case slices.Contains(mounts, tree):
			p.Empty = append(p.Empty, tree)
		default:
			p.Remove = append(p.Remove, tree)
		}
	}
	for _, f := range files {
		if exists(root.Path(f)) {
			p.Remove = append(p.Remove, root.Path(f))
		}
	}
	return p
}

// mountsInsideTrees are the mount points of mounts strictly inside the
// node stack's trees, deepest first.
func mountsInsideTrees(root hostfs.Root, mounts []string) []string {
	var out []string
	for _, t := range nodeTrees() {
		tree := root.Path(t)
		for _, m := range mounts {
			if inside(m, tree) {
				out = append(out, m)
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if d := strings.Count(b, "/") - strings.Count(a, "/"); d != 0 {
			return d
		}
		return strings.Compare(b, a)
	})
	return slices.Compact(out)
}

// inside reports whether p is strictly below dir.
func inside(p, dir string) bool {
	return strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// nodeReset is the plan of this run, made once: the mount points it reads
// change as the run unmounts them.
func (r *resetRun) nodeReset() nodeReset {
	if r.node == nil {
		mounts, err := mountPoints()
		if err != nil {
			r.errs = append(r.errs, err)
		}
		p := planNodeReset(r.o.Root, mounts)
		r.node = &p
	}
	return *r.node
}

// resetPodsPhase removes every pod while containerd and the kubelet still
// run, so no container outlives reset (containerd's shims are not its
// children to stop): through crictl, bounded, or, when containerd does not
// answer, by killing what runs in the kubepods cgroups and anvil's shims.
func resetPodsPhase(ctx context.Context, r *resetRun) error {
	p := r.nodeReset()
	if !p.Installed {
		return nil
	}
	if r.o.DryRun {
		r.res.Stopped = append(r.res.Stopped, "every pod (crictl rmp -af through "+p.Socket+")")
		return nil
	}
	// The kubelet first, or it makes again the sandboxes crictl removes.
	if err := r.stopKubelet(ctx, p); err != nil {
		r.errs = append(r.errs, err)
	}
	err := removePods(ctx, p)
	if err == nil {
		r.res.Stopped = append(r.res.Stopped, "pods")
		return nil
	}
	r.o.Task.Warn("containerd did not remove the pods (%v): killing their processes", err)
	killed, err := killPods(p.BinRoot)
	if err != nil {
		r.errs = append(r.errs, err)
	}
	if killed > 0 {
		r.o.Task.Say("killed %d pod and shim process(es)", killed)
		r.res.Stopped = append(r.res.Stopped, "pods (killed)")
	}
	return nil
}

// stopKubelet stops the kubelet alone, the way it runs here.
func (r *resetRun) stopKubelet(ctx context.Context, p nodeReset) error {
	var kubelet []component.Spec
	for _, c := range OwnedNodeStack() {
		if c.Name == node.Kubelet {
			kubelet = append(kubelet, c)
		}
	}
	realRoot := r.o.Root == "" || r.o.Root == "/"
	switch {
	case len(p.Units) > 0 && realRoot:
		return layout.Stop(ctx, layout.Options{Layout: v1alpha1.LayoutSystemd}, kubelet, true)
	case len(p.Specs) > 0 && supervise.Running(r.o.Root):
		return layout.Stop(ctx, layout.Options{Layout: v1alpha1.LayoutProcess, Root: r.o.Root}, kubelet, false)
	}
	return nil
}

// removePods has containerd stop and remove every pod sandbox.
func removePods(ctx context.Context, p nodeReset) error {
	if p.Crictl == "" {
		return fmt.Errorf("no %s under %s", images.Crictl, p.BinRoot)
	}
	if ok, _ := fsutil.Exists(p.Socket); !ok {
		return fmt.Errorf("no containerd socket %s", p.Socket)
	}
	ctx, cancel := context.WithTimeout(ctx, podRemovalTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Crictl, "--runtime-endpoint", "unix://"+p.Socket, "rmp", "-af")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("crictl rmp -af: no answer within %s", podRemovalTimeout)
	}
	if err != nil {
		return fmt.Errorf("crictl rmp -af: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// killPods sends SIGKILL to every process of a pod (its cgroup is under
// the kubelet's kubepods hierarchy, at the top of this machine's cgroup
// tree: pods of other machines, such as lab machines on this host, sit
// deeper) and to every containerd shim run from a release's binaries
// under binRoot. Nothing else is touched.
func killPods(binRoot string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	killed := 0
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		if !inKubepods(pid) && !isShim(pid, binRoot) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill pod process %d: %w", pid, err))
			continue
		}
		killed++
	}
	return killed, errors.Join(errs...)
}

// inKubepods reports whether a process's cgroup (in any hierarchy) is in
// the kubelet's kubepods tree at the top of this machine's hierarchy.
func inKubepods(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && isKubepodsPath(parts[2]) {
			return true
		}
	}
	return false
}

// isKubepodsPath: /kubepods/… (cgroupfs driver) or /kubepods.slice/…
// (systemd driver).
func isKubepodsPath(p string) bool {
	first, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return first == "kubepods" || first == "kubepods.slice"
}

// isShim reports whether a process runs anvil's containerd shim.
func isShim(pid int, binRoot string) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	return filepath.Base(exe) == images.ContainerdShim && inside(exe, binRoot)
}

// resetStopNodePhase stops the kubelet, then containerd, and removes their
// units: through systemd on a real host; in the process layout the
// supervisor drops them (and stop-supervisor waits for the rest).
func resetStopNodePhase(ctx context.Context, r *resetRun) error {
	p := r.nodeReset()
	if !p.Installed {
		return nil
	}
	cs := OwnedNodeStack()
	if len(p.Units) > 0 {
		realRoot := r.o.Root == "" || r.o.Root == "/"
		if realRoot && !r.o.DryRun {
			if err := layout.Stop(ctx, layout.Options{Layout: v1alpha1.LayoutSystemd}, cs, true); err != nil {
				r.errs = append(r.errs, err)
			}
		}
		if realRoot {
			r.res.Stopped = append(r.res.Stopped, node.Kubelet, node.Containerd)
		}
		for _, u := range p.Units {
			r.remove(u)
		}
		if realRoot && !r.o.DryRun {
			if err := layout.Reload(ctx); err != nil {
				r.errs = append(r.errs, err)
			}
		}
	}
	if len(p.Specs) > 0 && supervise.Running(r.o.Root) {
		r.res.Stopped = append(r.res.Stopped, node.Kubelet, node.Containerd)
		if !r.o.DryRun {
			if err := layout.Stop(ctx, layout.Options{Layout: v1alpha1.LayoutProcess, Root: r.o.Root}, cs, false); err != nil {
				r.errs = append(r.errs, err)
			}
		}
	}
	return nil
}

// resetNodeFilesPhase unmounts what is mounted inside the node stack's
// trees (deepest first, never following a link out of them), removes the
// pod network (routes, nftables table, bridge, CNI config), then the node
// stack's files; a tree that is itself a mount point is emptied, not
// removed. A tree with something still mounted inside is left alone:
// removing it would reach into the mounted filesystem.
func resetNodeFilesPhase(ctx context.Context, r *resetRun) error {
	p := r.nodeReset()
	if !p.Installed {
		return nil
	}
	unmounts := p.Unmount
	if !r.o.DryRun {
		// Read again now that nothing runs: the kubelet may have made a
		// sandbox (and its shm mount) after the plan was made.
		mounts, err := mountPoints()
		if err != nil {
			r.errs = append(r.errs, err)
			return nil
		}
		unmounts = mountsInsideTrees(r.o.Root, mounts)
	}
	for _, m := range unmounts {
		if r.o.DryRun {
			r.res.Unmounted = append(r.res.Unmounted, m)
			continue
		}
		if err := unmount(m); err != nil {
			r.errs = append(r.errs, err)
			continue
		}
		r.res.Unmounted = append(r.res.Unmounted, m)
	}
	if !r.o.DryRun {
		if err := podnet.Cleanup(ctx, podnet.CleanupOptions{Root: r.o.Root}); err != nil {
			r.errs = append(r.errs, fmt.Errorf("pod network: %w", err))
		}
		if err := cleanupKubeProxy(ctx, r.o.Root, p.KubeProxy); err != nil {
			r.errs = append(r.errs, err)
		}
	}
	var mounts []string
	if !r.o.DryRun {
		var err error
		if mounts, err = mountPoints(); err != nil {
			r.errs = append(r.errs, err)
			return nil
		}
	}
	r.removeNodeTrees(p, mounts)
	return nil
}

// removeNodeTrees removes p's paths and empties its mount points, leaving
// alone any of them with one of mounts still inside.
func (r *resetRun) removeNodeTrees(p nodeReset, mounts []string) {
	stillMounted := func(path string) bool {
		if i := slices.IndexFunc(mounts, func(m string) bool { return inside(m, path) }); i >= 0 {
			r.errs = append(r.errs, fmt.Errorf("%s is still mounted: %s left in place", mounts[i], path))
			return true
		}
		return false
	}
	for _, path := range p.Remove {
		if !stillMounted(path) {
			r.remove(path)
		}
	}
	for _, dir := range p.Empty {
		if stillMounted(dir) {
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			r.errs = append(r.errs, err)
			continue
		}
		for _, e := range entries {
			r.remove(filepath.Join(dir, e.Name()))
		}
		r.res.Kept = append(r.res.Kept, dir)
	}
}

// unmount unmounts target without following a symlink at it; a busy mount
// is detached (it goes away once no longer used).
func unmount(target string) error {
	err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// mountPoints lists this mount namespace's mount points.
func mountPoints() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return parseMountInfo(b), nil
}

// parseMountInfo takes the mount points (the fifth field, octal escapes
// decoded) of a mountinfo file.
func parseMountInfo(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 5 {
			out = append(out, unescapeOctal(f[4]))
		}
	}
	return out
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// newestBinary is name in the last of the release directories under
// binRoot that has it, or "" when none does.
func newestBinary(binRoot, name string) string {
	found, _ := filepath.Glob(filepath.Join(binRoot, "*", name))
	if len(found) == 0 {
		return ""
	}
	return found[len(found)-1]
}

// cleanupKubeProxy removes the nftables tables and iptables chains
// kube-proxy wrote, with kube-proxy's own --cleanup. They are the host's
// netfilter state, so under a --root (a test's) nothing is touched.
func cleanupKubeProxy(ctx context.Context, root hostfs.Root, bin string) error {
	if bin == "" || (root != "" && root != "/") {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "--cleanup").CombinedOutput(); err != nil {
		return fmt.Errorf("kube-proxy --cleanup: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}
