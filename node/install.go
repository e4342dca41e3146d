package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/supervise"
)

// InstallOptions say how to install and start the node stack here.
type InstallOptions struct {
	// Plan is the node's; its Root is the runtime root.
	Plan Plan
	// Layout runs the stack: systemd units for the systemd and static-pod
	// layouts (the kubelet cannot host itself), anvil's supervisor for the
	// process layout.
	Layout v1alpha1.Layout
	// Root is where files are written.
	Root hostfs.Root
	// Anvil runs the process layout's supervisor.
	Anvil string
	// Kubelet are the kubelet's credentials, obtained by init (from the
	// CA) or join (through a CSR sent with the token).
	Kubelet KubeletCredentials
	// KeepCredentials leaves the kubelet's credentials as they are (an
	// upgrade of a node that has them); Kubelet is then not used.
	KeepCredentials bool
	// Images are image archives imported before the kubelet starts,
	// besides the release's and those in ImagesDir: a static-pod master's
	// control-plane images.
	Images []string
	// Timeout bounds the waits for containerd and the kubelet.
	Timeout time.Duration
	Log     *slog.Logger
	Task    *progress.Task
	Now     func() time.Time
}

// InstallResult says what Install did.
type InstallResult struct {
	// Changed is true when a file changed (and what reads it restarted).
	Changed  bool
	Imported []string
	// Warnings are things to fix that did not stop the install (a cgroup
	// v1 host, an archive that is not an image).
	Warnings []string
}

// Install writes the node stack's configs, the kubelet's credentials and
// the units or process specs, starts containerd, imports the images the
// release ships and those in /var/lib/anvil/images (so the pause image and
// the system images are there before the kubelet asks for them), then
// starts the kubelet and waits until it is healthy. Running it again with
// the same input changes nothing; with new input it rewrites what differs
// and restarts what reads it.
func Install(ctx context.Context, o InstallOptions) (*InstallResult, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p, err := o.Plan.Complete()
	if err != nil {
		return nil, err
	}
	res := &InstallResult{}
	if !p.Facts.CgroupV2 {
		res.Warnings = append(res.Warnings, CgroupV1Warning(p.Host.Name))
		o.Task.Warn("%s", CgroupV1Warning(p.Host.Name))
	}
	cs, err := Components(p)
	if err != nil {
		return nil, err
	}
	configChanged, err := o.writeConfig(p)
	if err != nil {
		return nil, err
	}
	credsChanged := false
	if !o.KeepCredentials {
		if credsChanged, err = WriteKubeletCredentials(o.Root, p.Root, o.Kubelet, o.Now()); err != nil {
			return nil, fmt.Errorf("kubelet credentials: %w", err)
		}
	}
	specChanged, err := o.writeSpecs(p, cs)
	if err != nil {
		return nil, err
	}
	res.Changed = configChanged || credsChanged || specChanged
	lo := o.layoutOptions()
	containerd, kubelet := cs[:1], cs[1:]
	if err := layout.Start(ctx, lo, containerd); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	if configChanged || specChanged {
		if err := layout.Restart(ctx, lo, containerd); err != nil {
			return nil, err
		}
	}
	if err := waitSocket(ctx, o.Root.Path(ContainerdSocket), o.Timeout); err != nil {
		return nil, err
	}
	imp, err := ImportImages(ctx, ImportOptions{
		Root: o.Root, Ctr: p.binary(images.Ctr), Address: p.path(ContainerdSocket),
		Dirs: []string{p.imagesDir(), o.Root.Path(ImagesDir)}, Files: o.Images,
	})
	if err != nil {
		return nil, err
	}
	res.Imported = imp.Imported
	for _, e := range imp.Problems {
		res.Warnings = append(res.Warnings, e.Error())
		o.Task.Warn("%v", e)
	}
	if len(imp.Imported) > 0 {
		o.Task.Say("imported %d image archive(s) into containerd", len(imp.Imported))
	}
	if err := layout.Start(ctx, lo, kubelet); err != nil {
		return nil, fmt.Errorf("start the kubelet: %w", err)
	}
	if res.Changed {
		if err := layout.Restart(ctx, lo, kubelet); err != nil {
			return nil, err
		}
	}
	if err := waitHealthy(ctx, kubelet[0], o.Timeout); err != nil {
		return nil, err
	}
	if err := WriteStackState(o.Root, StackState{KubernetesVersion: p.KubernetesVersion, Layout: o.Layout}); err != nil {
		return nil, err
	}
	return res, nil
}

// StackStateFile records what Install last installed and started: an
// upgrade reads the version it switches from, and the layout.
const StackStateFile = hostfs.AnvilConfDir + "/node-stack.json"

// StackState is StackStateFile's content.
type StackState struct {
	KubernetesVersion string          `json:"kubernetesVersion"`
	Layout            v1alpha1.Layout `json:"layout"`
	// UpgradingTo is the version an unfinished upgrade (or rollback)
	// began to install.
	UpgradingTo string `json:"upgradingTo,omitempty"`
}

// ReadStackState reads StackStateFile under root.
func ReadStackState(root hostfs.Root) (*StackState, error) {
	p := root.Path(StackStateFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var st StackState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return &st, nil
}

// WriteStackState writes StackStateFile under root (0600).
func WriteStackState(root hostfs.Root, st StackState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	_, err = fsutil.EnsureFile(root.Path(StackStateFile), append(b, '\n'), 0o600, 0o700)
	return err
}

func (o InstallOptions) layoutOptions() layout.Options {
	return layout.Options{Layout: StackLayout(o.Layout), Root: o.Root, Anvil: o.Anvil}
}

// StackLayout is the layout the node stack runs in on a machine of layout
// l: the static-pod layout runs it as systemd units, since the kubelet
// cannot host itself.
func StackLayout(l v1alpha1.Layout) v1alpha1.Layout {
	if l == v1alpha1.LayoutStaticPod {
		return v1alpha1.LayoutSystemd
	}
	return l
}

// writeConfig writes containerd's and the kubelet's configs and the
// directories they use.
func (o InstallOptions) writeConfig(p Plan) (bool, error) {
	files, err := ConfigFiles(p)
	if err != nil {
		return false, err
	}
	return writeTree(o.Root, p.Root, files)
}

// writeSpecs writes the units (or the process specs).
func (o InstallOptions) writeSpecs(p Plan, cs []component.Spec) (bool, error) {
	var files []component.OutputFile
	var err error
	if o.Layout == v1alpha1.LayoutProcess {
		files, err = component.Processes(cs, component.ProcessOptions{LogDir: p.Root.Logs(), Dir: p.Root.Path("/")})
		files = append(files, component.OutputFile{Path: hostfs.LogDir, Mode: fs.ModeDir | 0o700})
	} else {
		files, err = component.Units(cs)
	}
	if err != nil {
		return false, err
	}
	return writeTree(o.Root, p.Root, files)
}

// writeTree writes host-path files under root; in the process layout their
// paths already carry the runtime root.
func writeTree(root, runtimeRoot hostfs.Root, files []component.OutputFile) (bool, error) {
	if runtimeRoot != "" && runtimeRoot != "/" {
		root = ""
	}
	written, err := component.WriteTree(root, files)
	if err != nil {
		return false, err
	}
	changed := false
	for _, w := range written {
		changed = changed || w.Outcome != fsutil.Unchanged
	}
	return changed, nil
}

// waitSocket waits until containerd accepts connections on its socket.
func waitSocket(ctx context.Context, socket string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("unix", socket, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd does not answer on %s after %s (journalctl -u containerd): %w", socket, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitHealthy waits for the component's readiness probe.
func waitHealthy(ctx context.Context, c component.Spec, timeout time.Duration) error {
	if c.Health.Ready == nil {
		return nil
	}
	probe := supervise.NewProber()
	defer probe.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := probe.Check(ctx, *c.Health.Ready, 2*time.Second)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not healthy after %s (journalctl -u %s): %w", c.Name, timeout, c.UnitName(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
