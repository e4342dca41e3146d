package support

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/buildinfo"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
	"anvil.dev/anvil/supervise"
)

// DefaultSince is how much of the journal a bundle holds by default.
const DefaultSince = 6 * time.Hour

// Bounds on what one file of a bundle may take: a machine in trouble may
// have huge logs, and a bundle has to stay small enough to send.
const (
	maxConfigBytes = 1 << 20
	maxLogBytes    = 16 << 20
	journalLines   = 200000
)

// Options say what Collect looks at.
type Options struct {
	// Root is the host's root (--root).
	Root hostfs.Root
	// Dir is the archive's one top directory (the node's name).
	Dir string
	// Since is how far back the journal goes (DefaultSince when zero).
	Since time.Duration
	// ClusterObjects adds the cluster's Nodes and events, read with the
	// admin kubeconfig; a machine without one (a worker) notes that.
	ClusterObjects bool
	// Exec runs a program on the host and returns its stdout (systemctl,
	// journalctl); nil runs it for real.
	Exec func(ctx context.Context, name string, args ...string) ([]byte, error)
	// ReadStatus is `anvil status`; nil is master.ReadStatus.
	ReadStatus func(ctx context.Context, root hostfs.Root) (*master.Status, error)
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Result is what a bundle holds.
type Result struct {
	// Files are the archive's files, in order.
	Files []string
	// Problems are what could not be collected, each with why; the
	// archive holds them as problems.txt.
	Problems []string
}

// collector is one run of Collect.
type collector struct {
	o   Options
	tw  *tar.Writer
	now time.Time
	res Result
	// state is the node's state file, nil when no init or join ran here.
	state *master.NodeState
}

// part is one section of a bundle; an error is a problem noted in the
// bundle, not the end of it.
type part struct {
	name    string
	collect func(ctx context.Context, c *collector) error
}

// parts is what a bundle holds, in archive order.
func parts() []part {
	return []part{
		{"versions", collectVersions},     // anvil's and the components' versions
		{"status", collectStatus},         // anvil status -o json, etcd members and health
		{"units", collectUnits},           // unit states and their journal
		{"supervisor", collectSupervisor}, // the process layout's status and logs
		{"certificates", collectCerts},    // certificate and kubeconfig expiry
		{"kernel", collectKernel},         // uname, cmdline, cgroups, filesystems
		{"files", collectFiles},           // anvil's configuration, redacted
		{"cluster", collectCluster},       // Nodes and events (masters)
	}
}

// Collect writes a machine's support bundle to w as a tar.gz whose files
// are all under o.Dir and all redacted. Only a failure to write ends it
// with an error; whatever could not be collected is in Result.Problems.
func Collect(ctx context.Context, w io.Writer, o Options) (*Result, error) {
	if o.Since <= 0 {
		o.Since = DefaultSince
	}
	if o.Exec == nil {
		o.Exec = run
	}
	if o.ReadStatus == nil {
		o.ReadStatus = master.ReadStatus
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Dir == "" {
		o.Dir = "host"
	}
	gz := gzip.NewWriter(w)
	c := &collector{o: o, tw: tar.NewWriter(gz), now: o.Now()}
	if st, err := master.ReadNodeState(o.Root); err == nil {
		c.state = st
	} else if !errors.Is(err, fs.ErrNotExist) {
		c.problem("node state", err)
	}
	for _, p := range parts() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := p.collect(ctx, c); err != nil {
			var we writeError
			if errors.As(err, &we) {
				return nil, err
			}
			c.problem(p.name, err)
		}
	}
	if len(c.res.Problems) > 0 {
		if err := c.add("problems.txt", []byte(strings.Join(c.res.Problems, "\n")+"\n")); err != nil {
			return nil, err
		}
	}
	if err := c.tw.Close(); err != nil {
		return nil, fmt.Errorf("write the bundle: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("write the bundle: %w", err)
	}
	return &c.res, nil
}

// writeError is a failure to write the archive itself.
type writeError struct{ err error }

func (e writeError) Error() string { return "write the bundle: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

func (c *collector) problem(what string, err error) {
	c.res.Problems = append(c.res.Problems, what+": "+strings.ReplaceAll(err.Error(), "\n", " "))
}

// add writes one file into the archive, redacted.
func (c *collector) add(name string, data []byte) error {
	data = Redact(data)
	full := path.Join(c.o.Dir, name)
	hdr := &tar.Header{Name: full, Mode: 0o600, Size: int64(len(data)), ModTime: c.now, Typeflag: tar.TypeReg}
	if err := c.tw.WriteHeader(hdr); err != nil {
		return writeError{err}
	}
	if _, err := c.tw.Write(data); err != nil {
		return writeError{err}
	}
	c.res.Files = append(c.res.Files, full)
	return nil
}

func (c *collector) addJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return c.add(name, append(b, '\n'))
}

// run runs a program for real.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func collectVersions(_ context.Context, c *collector) error {
	var b strings.Builder
	fmt.Fprintf(&b, "anvil %s (the binary that made this bundle)\n", buildinfo.Version())
	if st := c.state; st != nil {
		fmt.Fprintf(&b, "node %s, role %s, layout %s, kubernetes %s, since %s\n",
			st.Node, st.Role, st.Layout, st.KubernetesVersion, st.Initialized.Format(time.RFC3339))
	} else {
		fmt.Fprintln(&b, "no anvil init or join ran on this machine")
	}
	if err := c.add("versions.txt", []byte(b.String())); err != nil {
		return err
	}
	// Every installed version's manifest: the binaries' versions and
	// sha256, anvil's own included.
	manifests, err := filepath.Glob(c.o.Root.Join(hostfs.BinDir, "*", images.ManifestFile))
	if err != nil {
		return err
	}
	for _, m := range manifests {
		b, err := os.ReadFile(m)
		if err != nil {
			c.problem("versions", err)
			continue
		}
		if err := c.add(path.Join("versions", filepath.Base(filepath.Dir(m)), images.ManifestFile), b); err != nil {
			return err
		}
	}
	return nil
}

func collectStatus(ctx context.Context, c *collector) error {
	if c.state == nil {
		return nil
	}
	st, err := c.o.ReadStatus(ctx, c.o.Root)
	if err != nil {
		return err
	}
	if err := c.addJSON("status.json", st); err != nil {
		return err
	}
	if st.Etcd == nil {
		return nil
	}
	return c.addJSON("etcd.json", struct {
		Healthy bool `json:"healthy"`
		*master.EtcdStatus
	}{st.Etcd.Error == "" && st.Etcd.Leader != "", st.Etcd})
}

// units are the systemd units anvil declares, read off the component
// declarations: the control plane's and the agent's (master.OwnedUnits),
// then the node stack's (containerd, the kubelet).
func units() []string {
	out := master.OwnedUnits()
	c := &v1alpha1.Cluster{Name: "reference", Hosts: []v1alpha1.Host{{Name: "n", Address: netip.MustParseAddr("192.0.2.1"), Role: v1alpha1.RoleWorker}}}
	c.Default()
	cs, err := node.Components(node.Plan{Cluster: c, Host: c.Hosts[0]})
	if err != nil {
		panic("support: the node stack's declarations do not complete: " + err.Error())
	}
	for _, s := range cs {
		if u := s.UnitName(); !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

func collectUnits(ctx context.Context, c *collector) error {
	if c.state != nil && c.state.Layout != "" && c.state.Layout != v1alpha1.LayoutSystemd {
		return nil
	}
	us := units()
	show := append([]string{"show", "--no-pager", "-p",
		"Id,LoadState,ActiveState,SubState,UnitFileState,Result,NRestarts,ExecMainStatus,ExecMainPID,StateChangeTimestamp,FragmentPath"}, us...)
	out, err := c.o.Exec(ctx, "systemctl", show...)
	if err != nil {
		c.problem("units", err)
	} else if err := c.add("units.txt", out); err != nil {
		return err
	}
	since := "@" + strconv.FormatInt(c.now.Add(-c.o.Since).Unix(), 10)
	for _, u := range us {
		out, err := c.o.Exec(ctx, "journalctl", "--no-pager", "-o", "short-iso-precise", "--since", since, "-n", strconv.Itoa(journalLines), "-u", u)
		if err != nil {
			c.problem("journal of "+u, err)
			continue
		}
		if err := c.add(path.Join("journal", u+".log"), out); err != nil {
			return err
		}
	}
	return nil
}

func collectSupervisor(_ context.Context, c *collector) error {
	if b, err := os.ReadFile(c.o.Root.Join(supervise.Dir, "status.json")); err == nil {
		if err := c.add("supervisor/status.json", b); err != nil {
			return err
		}
	}
	logs, err := filepath.Glob(c.o.Root.Join(hostfs.LogDir, "*.log"))
	if err != nil {
		return err
	}
	for _, l := range logs {
		b, err := tail(l, maxLogBytes)
		if err != nil {
			c.problem("supervisor", err)
			continue
		}
		if err := c.add(path.Join("supervisor", "logs", filepath.Base(l)), b); err != nil {
			return err
		}
	}
	return nil
}

// tail reads the last n bytes of a file, from a line's start.
func tail(p string, n int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() <= n {
		return io.ReadAll(f)
	}
	if _, err := f.Seek(fi.Size()-n, io.SeekStart); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return append([]byte(fmt.Sprintf("[the first %d bytes of %s are left out]\n", fi.Size()-int64(len(b)), p)), b...), nil
}

func collectCerts(_ context.Context, c *collector) error {
	if ok, _ := exists(c.o.Root.PKI()); !ok {
		return nil
	}
	exp, err := pki.CheckExpiration(c.o.Root.PKI(), pki.Options{KubeconfigDir: c.o.Root.Kubernetes()})
	if err != nil {
		return err
	}
	return c.addJSON("certificates.json", exp)
}

func collectKernel(_ context.Context, c *collector) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		s := strings.Join([]string{unix.ByteSliceToString(u.Sysname[:]), unix.ByteSliceToString(u.Nodename[:]),
			unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:]), unix.ByteSliceToString(u.Machine[:])}, " ")
		if err := c.add("kernel/uname.txt", []byte(s+"\n")); err != nil {
			return err
		}
	}
	for _, f := range []struct{ from, to string }{
		{"/proc/cmdline", "cmdline"},
		{"/proc/self/cgroup", "self-cgroup"},
		{"/proc/filesystems", "filesystems"},
		{"/etc/os-release", "os-release"},
	} {
		b, err := os.ReadFile(c.o.Root.Path(f.from))
		if err != nil {
			c.problem("kernel", err)
			continue
		}
		if err := c.add(path.Join("kernel", f.to), b); err != nil {
			return err
		}
	}
	b, err := os.ReadFile(c.o.Root.Path("/proc/self/mountinfo"))
	if err != nil {
		return err
	}
	var mounts []string
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, "cgroup") {
			mounts = append(mounts, line)
		}
	}
	return c.add("kernel/cgroup-mounts.txt", []byte(strings.Join(mounts, "")))
}

// configFiles are the files of anvil's a bundle copies (redacted): its
// configuration, the kubeconfigs (which server, which user), the static
// pods, the agent's kubeconfig and the units anvil declares. The PKI
// itself never goes in: certificates.json says what matters of it.
func configFiles(root hostfs.Root) []string {
	var out []string
	_ = filepath.WalkDir(root.AnvilConf(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	for _, pattern := range []string{root.Join(hostfs.KubernetesDir, "*.conf"), root.Join(hostfs.ManifestsDir, "*")} {
		m, _ := filepath.Glob(pattern)
		out = append(out, m...)
	}
	out = append(out, root.Path(agent.KubeconfigFile))
	for _, u := range units() {
		out = append(out, root.Join(hostfs.UnitDir, u))
	}
	return out
}

func collectFiles(_ context.Context, c *collector) error {
	for _, p := range configFiles(c.o.Root) {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			c.problem("files", err)
			continue
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		rel := p
		if r := string(c.o.Root); r != "" && r != "/" {
			rel, _ = filepath.Rel(r, p)
		}
		name := path.Join("files", filepath.ToSlash(rel))
		if fi.Size() > maxConfigBytes {
			c.problem("files", fmt.Errorf("%s is left out: %d bytes", p, fi.Size()))
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			c.problem("files", err)
			continue
		}
		if err := c.add(name, b); err != nil {
			return err
		}
	}
	return nil
}

func collectCluster(ctx context.Context, c *collector) error {
	kubeconfig := c.o.Root.Kubeconfig(pki.AdminKubeconfig)
	if ok, _ := exists(kubeconfig); !ok {
		if c.o.ClusterObjects && c.state != nil && c.state.Role == v1alpha1.RoleMaster {
			return fmt.Errorf("no admin kubeconfig at %s", kubeconfig)
		}
		return nil
	}
	if !c.o.ClusterObjects {
		return nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("read %s: %w", kubeconfig, err)
	}
	cfg.Timeout = 20 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		c.problem("cluster", fmt.Errorf("list Nodes: %w", err))
	} else {
		nodes.APIVersion, nodes.Kind = "v1", "NodeList"
		for i := range nodes.Items {
			nodes.Items[i].APIVersion, nodes.Items[i].Kind = "v1", "Node"
			nodes.Items[i].ManagedFields = nil
		}
		if err := c.addYAML("cluster/nodes.yaml", nodes); err != nil {
			return err
		}
	}
	events, err := cs.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	events.APIVersion, events.Kind = "v1", "EventList"
	slices.SortStableFunc(events.Items, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	for i := range events.Items {
		events.Items[i].APIVersion, events.Items[i].Kind = "v1", "Event"
		events.Items[i].ManagedFields = nil
	}
	return c.addYAML("cluster/events.yaml", events)
}

func (c *collector) addYAML(name string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return c.add(name, b)
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// eventTime is when an event last happened, whichever field says it.
func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}
