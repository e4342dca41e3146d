package master

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/podnet"
)

// fakeNode lays out a node stack's files under a temporary root.
func fakeNode(t *testing.T) hostfs.Root {
	t.Helper()
	root := hostfs.Root(t.TempDir())
	for _, f := range []string{
		node.ContainerdConfigFile, node.KubeletConfigFile, node.KubeletClientCert, node.KubeletKubeconfig,
		podnet.CNIConfigPath, filepath.Join(podnet.HostLocalDataDir, podnet.NetworkName, "10.244.1.2"),
		node.ContainerdRootDir + "/io.containerd.content.v1.content/blobs/x",
		node.ContainerdRootDir + "/io.containerd.metadata.v1.bolt/meta.db",
		node.ContainerdStateDir + "/containerd.sock",
		node.KubeletDir + "/pods/p1/volumes/kubernetes.io~empty-dir/v/data",
		component.ProcessSpecDir + "/" + node.Kubelet + ".json",
		component.ProcessSpecDir + "/" + node.Containerd + ".json",
		"/etc/cni/net.d/99-someone-elses.conflist",
	} {
		p := root.Path(f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestNodeResetPlan(t *testing.T) {
	root := fakeNode(t)
	volume := root.Path(node.KubeletDir + "/pods/p1/volumes/kubernetes.io~empty-dir/v")
	pods := root.Path(node.KubeletDir + "/pods")
	snapshot := root.Path(node.ContainerdRootDir + "/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs")
	mounts := []string{"/", "/proc", pods, volume, snapshot, root.Path(node.ContainerdStateDir) + "-not-inside", "/var/lib/kubelet-elsewhere"}

	t.Run("not installed: nothing", func(t *testing.T) {
		p := planNodeReset(hostfs.Root(t.TempDir()), mounts)
		if p.Installed || len(p.Remove)+len(p.Empty)+len(p.Unmount) > 0 {
			t.Errorf("plan for a machine without the node stack: %+v", p)
		}
	})

	t.Run("installed", func(t *testing.T) {
		p := planNodeReset(root, mounts)
		if !p.Installed {
			t.Fatal("the node stack is not seen")
		}
		if want := []string{volume, snapshot, pods}; !slices.Equal(p.Unmount, want) {
			t.Errorf("unmount %v, want %v (deepest first, only inside the trees)", p.Unmount, want)
		}
		want := []string{
			root.Path(node.KubeletDir), root.Path(node.ContainerdStateDir), root.Path(node.ContainerdRootDir),
			root.Path("/etc/containerd"), root.Path(node.KubeletKubeconfig), root.Path(podnet.CNIConfigPath),
			root.Join(podnet.HostLocalDataDir, podnet.NetworkName),
		}
		if !slices.Equal(p.Remove, want) {
			t.Errorf("remove %v, want %v", p.Remove, want)
		}
		if len(p.Empty) > 0 {
			t.Errorf("empty %v, want none", p.Empty)
		}
		if len(p.Specs) != 2 || p.Socket != root.Path(node.ContainerdSocket) {
			t.Errorf("specs %v socket %q", p.Specs, p.Socket)
		}
	})

	t.Run("containerd's directory a mount point: emptied, kept", func(t *testing.T) {
		p := planNodeReset(root, append(mounts, root.Path(node.ContainerdRootDir)))
		if slices.Contains(p.Remove, root.Path(node.ContainerdRootDir)) || !slices.Equal(p.Empty, []string{root.Path(node.ContainerdRootDir)}) {
			t.Errorf("remove %v empty %v: want %s emptied, not removed", p.Remove, p.Empty, node.ContainerdRootDir)
		}
		if slices.Contains(p.Unmount, root.Path(node.ContainerdRootDir)) {
			t.Errorf("unmounts the directory it was given: %v", p.Unmount)
		}
	})
}

// TestNodeResetRemoves: a dry run lists what the node phases would remove
// and changes nothing; removing (without unmounting and the pod network,
// which need a real machine) takes exactly that and keeps a mount point's
// directory; a tree with a mount left inside is not touched.
func TestNodeResetRemoves(t *testing.T) {
	root := fakeNode(t)
	mountPoint := root.Path(node.ContainerdRootDir)
	plan := planNodeReset(root, []string{mountPoint})
	plan.Specs = nil // no supervisor here

	dry := &resetRun{o: ResetOptions{Root: root, DryRun: true}, node: &plan}
	for _, ph := range []func(context.Context, *resetRun) error{resetStopNodePhase, resetNodeFilesPhase} {
		if err := ph(context.Background(), dry); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		root.Path(node.KubeletDir), root.Path(node.ContainerdStateDir),
		root.Path("/etc/containerd"), root.Path(node.KubeletKubeconfig), root.Path(podnet.CNIConfigPath),
		root.Join(podnet.HostLocalDataDir, podnet.NetworkName),
		mountPoint + "/io.containerd.content.v1.content", mountPoint + "/io.containerd.metadata.v1.bolt",
	}
	if !slices.Equal(dry.res.Removed, want) || !slices.Equal(dry.res.Kept, []string{mountPoint}) {
		t.Errorf("dry run: removed %v kept %v\nwant removed %v kept %v", dry.res.Removed, dry.res.Kept, want, []string{mountPoint})
	}
	for _, p := range want {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the dry run removed %s", p)
		}
	}

	r := &resetRun{o: ResetOptions{Root: root}}
	r.removeNodeTrees(plan, nil)
	if !slices.Equal(r.res.Removed, want) {
		t.Errorf("removed %v, want the dry run's %v", r.res.Removed, want)
	}
	if entries, err := os.ReadDir(mountPoint); err != nil || len(entries) > 0 {
		t.Errorf("%s: %v, entries %v: want it kept, empty", mountPoint, err, entries)
	}
	if _, err := os.Stat(root.Path("/etc/cni/net.d/99-someone-elses.conflist")); err != nil {
		t.Errorf("another CNI config was removed: %v", err)
	}

	root = fakeNode(t)
	plan = planNodeReset(root, nil)
	left := root.Path(node.KubeletDir + "/pods/p1/volumes/kubernetes.io~empty-dir/v")
	r = &resetRun{o: ResetOptions{Root: root}}
	r.removeNodeTrees(plan, []string{left})
	if _, err := os.Stat(left + "/data"); err != nil || slices.Contains(r.res.Removed, root.Path(node.KubeletDir)) || len(r.errs) != 1 {
		t.Errorf("a tree with a mount inside: %v, removed %v, errors %v", err, r.res.Removed, r.errs)
	}
}

func TestParseMountInfo(t *testing.T) {
	in := "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n" +
		"37 35 0:5 / /var/lib/kubelet/pods/x/volumes/a rw - tmpfs tmpfs rw\n"
	got := parseMountInfo([]byte(in))
	if want := []string{"/mnt/with space", "/var/lib/kubelet/pods/x/volumes/a"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestKubepodsCgroup(t *testing.T) {
	for p, want := range map[string]bool{
		"/kubepods/burstable/pod1/abc":                          true,
		"/kubepods.slice/kubepods-besteffort.slice/cri-x.scope": true,
		"/machine.slice/machine-lab.scope/kubepods/pod1/abc":    false,
		"/system.slice/kubelet.service":                         false,
		"/user.slice/kubepods-but-not":                          false,
	} {
		if got := isKubepodsPath(p); got != want {
			t.Errorf("%s: %v, want %v", p, got, want)
		}
	}
}

// TestResetDryRun: `anvil reset --dry-run` on a node lists the node
// stack's paths among what it would remove and changes nothing.
func TestResetDryRun(t *testing.T) {
	root := fakeNode(t)
	res, err := Reset(context.Background(), ResetOptions{Root: root, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		root.Path(node.KubeletDir), root.Path(node.ContainerdStateDir), root.Path(node.ContainerdRootDir),
		root.Path("/etc/containerd"), root.Path(node.KubeletKubeconfig), root.Path(podnet.CNIConfigPath),
	} {
		if !slices.Contains(res.Removed, p) {
			t.Errorf("the dry run does not list %s: %v", p, res.Removed)
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the dry run removed %s", p)
		}
	}
	if len(res.Stopped) == 0 || !strings.Contains(res.Stopped[0], "crictl rmp -af") {
		t.Errorf("the dry run does not say it removes the pods: %v", res.Stopped)
	}
}

// TestResetKeepBinariesKeepsImages: --keep-binaries keeps what an upload
// put on the host, the image archives in /var/lib/anvil/images too (a
// join re-run resets the host that way and finds nothing to upload).
func TestResetKeepBinariesKeepsImages(t *testing.T) {
	root := fakeNode(t)
	images := root.Path(node.ImagesDir)
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/opt/anvil/bin/v1/images/pause.tar", filepath.Join(images, "pause.tar")); err != nil {
		t.Fatal(err)
	}
	for _, keep := range []bool{true, false} {
		res, err := Reset(context.Background(), ResetOptions{Root: root, KeepBinaries: keep, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if kept := slices.Contains(res.Kept, images); kept != keep || slices.Contains(res.Removed, images) == keep {
			t.Errorf("--keep-binaries=%v: kept %v, removed %v; want %s kept only with the flag", keep, res.Kept, res.Removed, images)
		}
	}
}
