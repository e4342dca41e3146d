package installer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/master"
	nodepkg "anvil.dev/anvil/node"
)

// Phase facts: one read-only script per host, one round trip, that says
// what the machine is and what of anvil is on it. Every later phase
// decides from these facts alone.

// Facts is what gathering found on a host.
type Facts struct {
	OS        string `json:"os"` // PRETTY_NAME
	OSID      string `json:"osID"`
	OSVersion string `json:"osVersion"`
	Arch      string `json:"arch"` // uname -m
	Kernel    string `json:"kernel"`
	Hostname  string `json:"hostname"`
	MachineID string `json:"machineID"`
	// Addresses are the global-scope addresses of its interfaces.
	Addresses []netip.Addr `json:"addresses"`
	// ClockSkew is the host's clock minus the workstation's, known to
	// within ClockUncertainty (half the round trip).
	ClockSkew        time.Duration `json:"clockSkew"`
	ClockUncertainty time.Duration `json:"clockUncertainty"`
	// Systemd is `systemctl is-system-running` ("" without systemd).
	Systemd string `json:"systemd"`
	// Listening are the TCP ports something listens on.
	Listening []Listener `json:"listening,omitempty"`
	// KernelSupport says, for each kernel module a host that runs pods
	// needs (kernelFeatures), whether the running kernel has it: nil when
	// it was not looked at.
	KernelSupport map[string]KernelSupport `json:"kernelSupport,omitempty"`
	HasZstd       bool                     `json:"hasZstd"`
	// Installed is what of the run's Kubernetes version is in
	// /opt/anvil/bin/<version>: each file's sha256 as computed on the host,
	// by its name there (cni/bridge), and the manifest there.
	Installed map[string]string `json:"installed,omitempty"`
	Manifest  []byte            `json:"-"`
	// Archives are the sha256 of the cluster file's image archives in
	// /var/lib/anvil/images, by name.
	Archives map[string]string `json:"archives,omitempty"`
	// AnvilVersion is `anvil version` of the installed anvil.
	AnvilVersion string `json:"anvilVersion,omitempty"`
	// Links are the entries anvil manages in /usr/local/bin, /opt/cni/bin
	// and /var/lib/anvil/images, by path: the link target, or "" for a
	// file that is not a link.
	Links map[string]string `json:"links,omitempty"`
	// Units maps anvil's systemd units to `systemctl is-active`.
	Units map[string]string `json:"units,omitempty"`
	// Node is what init or join recorded once it completed; nil when
	// neither did.
	Node *master.NodeState `json:"node,omitempty"`
	// NodeStack is the Kubernetes version and layout the node stack (the
	// kubelet) was installed with; nil on a host without one.
	NodeStack *nodepkg.StackState `json:"nodeStack,omitempty"`
	// AgentJoined is a node agent with its own credentials, running: a
	// join that completed, whether or not it recorded Node.
	AgentJoined bool `json:"agentJoined,omitempty"`
	// AgentUnit is whether the node agent's unit is installed: a host
	// without one registers no Node.
	AgentUnit bool `json:"agentUnit,omitempty"`
	// ClusterName is the name in the cluster file init or join left.
	ClusterName string `json:"clusterName,omitempty"`
	// AdminKubeconfigSHA256 is the sha256 of a master's admin kubeconfig
	// (the file itself holds a key and is read only when it is needed).
	AdminKubeconfigSHA256 string `json:"adminKubeconfigSHA256,omitempty"`
	// Leftovers are anvil's files on a host where no init or join
	// completed: an interrupted run.
	Leftovers []string `json:"leftovers,omitempty"`
	// Owned are anvil's top directories that exist on the host, whatever
	// put them there (what reset has to remove).
	Owned []string `json:"owned,omitempty"`
	// Status is `anvil status -o json` on a host that is a node.
	Status    *master.Status `json:"status,omitempty"`
	StatusErr string         `json:"statusError,omitempty"`
}

// KernelSupport is whether the running kernel has a feature.
type KernelSupport string

const (
	// KernelLoaded is a feature in the running kernel: built in, or a
	// module loaded.
	KernelLoaded KernelSupport = "loaded"
	// KernelModule is a module the kernel can load, not loaded yet.
	KernelModule KernelSupport = "module"
	// KernelAbsent is a feature neither built in nor a module: the
	// kernel's config or its module list says so.
	KernelAbsent KernelSupport = "absent"
	// KernelUnknown is a feature nothing on the host told about.
	KernelUnknown KernelSupport = ""
)

// kernelFeature is a kernel module a host that runs pods needs.
type kernelFeature struct {
	module string
	// config is its kernel config symbol, without CONFIG_.
	config string
	// loaded is a shell condition that holds when the running kernel has
	// it (besides /sys/module/<module>, which built-in code without
	// parameters lacks).
	loaded string
	// autoloads is a module the kernel loads on first use.
	autoloads bool
	// neededBy says what needs it, for messages.
	neededBy string
}

// kernelFeatures are the kernel modules a host that runs pods needs.
func kernelFeatures() []kernelFeature {
	return []kernelFeature{
		{module: "overlay", config: "OVERLAY_FS", loaded: "grep -qw overlay /proc/filesystems", autoloads: true,
			neededBy: "containerd's overlayfs snapshotter"},
		{module: "br_netfilter", config: "BRIDGE_NETFILTER", loaded: "[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]",
			neededBy: "Service traffic between pods on one node's bridge"},
		{module: "nf_tables", config: "NF_TABLES", autoloads: true,
			neededBy: "kube-proxy's and the pod network's nftables rules"},
	}
}

// kernelScript prints what tells whether the kernel has each feature:
// "loaded M" (in the running kernel), "builtin M" and "module M" (from
// the module lists), "modules" when those lists exist, and "config …"
// lines of the kernel's config when it is readable. Only reads.
func kernelScript() string {
	var mods, configs, lines []string
	for _, f := range kernelFeatures() {
		mods = append(mods, f.module)
		configs = append(configs, f.config)
		if f.loaded != "" {
			lines = append(lines, fmt.Sprintf("%s && echo 'loaded %s'", f.loaded, f.module))
		}
	}
	re := "(" + strings.Join(mods, "|") + ")"
	return strings.Join(append([]string{
		"s kernel",
		"for m in " + strings.Join(mods, " ") + `; do [ -d "/sys/module/$m" ] && echo "loaded $m"; done`}, append(lines,
		"k=/lib/modules/$(uname -r); [ -f $k/modules.dep ] && echo modules",
		`grep -hoE '^[^:]*/`+re+`\.ko' $k/modules.builtin | sed 's|.*/|builtin |; s|\.ko$||'`,
		`grep -hoE '^[^:]*/`+re+`\.ko' $k/modules.dep | sed 's|.*/|module |; s|\.ko$||'`,
		`{ zcat /proc/config.gz || cat /boot/config-$(uname -r); } | grep -E '^CONFIG_(MODULES|`+strings.Join(configs, "|")+`)=|^# CONFIG_MODULES is not set' | sed 's/^/config /'`,
	)...), "\n")
}

// parseKernel reads the kernel section: per feature, the best support
// anything showed, or absent when the module lists or the config were
// read and showed none.
func parseKernel(lines []string) map[string]KernelSupport {
	out := map[string]KernelSupport{}
	known := false
	better := func(m string, s KernelSupport) {
		if out[m] != KernelLoaded {
			out[m] = s
		}
	}
	for _, l := range lines {
		kind, arg, _ := strings.Cut(strings.TrimSpace(l), " ")
		switch kind {
		case "loaded", "builtin":
			out[arg] = KernelLoaded
		case "module":
			better(arg, KernelModule)
		case "modules":
			known = true
		case "config":
			known = true
			sym, val, _ := strings.Cut(strings.TrimPrefix(arg, "CONFIG_"), "=")
			for _, f := range kernelFeatures() {
				switch {
				case f.config != sym:
				case val == "y":
					out[f.module] = KernelLoaded
				case val == "m":
					better(f.module, KernelModule)
				}
			}
		}
	}
	for _, f := range kernelFeatures() {
		if _, ok := out[f.module]; !ok {
			out[f.module] = KernelUnknown
			if known {
				out[f.module] = KernelAbsent
			}
		}
	}
	return out
}

// Listener is a listening TCP socket.
type Listener struct {
	Addr    netip.AddrPort `json:"addr"`
	Process string         `json:"process,omitempty"`
}

// Member reports whether init or join completed here.
func (f *Facts) Member() bool { return f.Node != nil || f.AgentJoined }

// ControlPlane reports whether init (or a control-plane join) completed
// here.
func (f *Facts) ControlPlane() bool {
	return f.Node != nil && f.Node.Role == v1alpha1.RoleMaster
}

// anvilUnits are the systemd units anvil runs, from the component
// declarations: the control plane's, the agent's, the backup timer and the
// node stack's (containerd, the kubelet).
func anvilUnits() []string {
	units := master.OwnedUnits()
	for _, c := range master.OwnedNodeStack() {
		units = append(units, c.UnitName())
	}
	return units
}

// leftoverPaths are what an interrupted init or join leaves.
func leftoverPaths() []string {
	return []string{hostfs.PKIDir, hostfs.EtcdDataDir, hostfs.AnvilConfDir, hostfs.StateDir + "/agent",
		hostfs.UnitDir + "/anvil-etcd.service", hostfs.UnitDir + "/kube-apiserver.service", hostfs.UnitDir + "/anvil-agent.service"}
}

func planFacts(r *run) plan {
	var pl plan
	for _, h := range r.alive() {
		pl.steps = append(pl.steps, step{host: h, do: "read the OS, addresses, clock, ports and what of anvil is installed", run: func(ctx context.Context) (string, error) {
			f, err := r.gatherFacts(ctx, h, r.factsReq)
			if err != nil {
				return "", err
			}
			h.facts = f
			return summarizeFacts(f), nil
		}})
	}
	return pl
}

func summarizeFacts(f *Facts) string {
	s := fmt.Sprintf("%s %s", f.OS, f.Arch)
	switch {
	case f.Node != nil:
		s += fmt.Sprintf(", a %s since %s", f.Node.Role, f.Node.Initialized.Format(time.RFC3339))
	case f.AgentJoined:
		s += ", a node (its agent runs)"
	case len(f.Leftovers) > 0:
		s += fmt.Sprintf(", %d leftovers of an interrupted run", len(f.Leftovers))
	default:
		s += ", not a node yet"
	}
	return s
}

// ownedPaths are the directories only anvil writes.
func ownedPaths() []string {
	return []string{"/opt/anvil", hostfs.AnvilConfDir, hostfs.StateDir, hostfs.RunDir}
}

// factsRequest is what to look at.
type factsRequest struct {
	version string
	// files are the names in /opt/anvil/bin/<version> to hash (anvil is
	// always hashed).
	files []string
	// archives are the names in /var/lib/anvil/images to hash.
	archives []string
	// links are the names to read in each link directory (anvil's in
	// /usr/local/bin is always read).
	links map[string][]string
	// status runs `anvil status -o json` on nodes.
	status bool
	// updateCache lets the hashing record what it hashed on the host
	// (never in a dry run, which changes nothing).
	updateCache bool
	// kernel looks at what the kernel has of kernelFeatures.
	kernel bool
}

const sectionMark = "@@anvil-facts:"

// factsScript is the read-only shell script that gathers the facts, in
// one round trip and few processes (each costs milliseconds on a small
// machine). Each section starts with a marker line; a probe that fails
// leaves its section empty. The clock comes first so that the time it
// prints is close to the moment its line arrives. The two runs of anvil
// (hashing, then `anvil status` on a node), the slow part (a quarter of a
// second each just to start), run one after the other beside the rest and
// report on stderr, so the two streams never interleave. Listening ports
// matter only on a machine that is no node yet, and `ss -p` reads every
// process's file descriptors: nodes skip it.
func factsScript(q factsRequest) string {
	d := binDir(q.version)
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("exec 4>&2 2>/dev/null")
	w("s() { printf '\\n%s%%s@@\\n' \"$1\"; }", sectionMark)
	w("s time; date +%%s.%%N")
	w("d=%s", sshx.ShellQuote(d))
	w("(")
	// The installed anvil hashes every file, itself included, with the
	// CPU's SHA instructions and several at once (3× sha256sum); a host
	// without it, or with an anvil too old for the helper, uses sha256sum.
	w("  set --; for f in %s; do [ -f \"$d/$f\" ] && set -- \"$@\" \"$d/$f\"; done", quoteAll(append([]string{images.AnvilBinary}, q.files...)))
	if len(q.archives) > 0 {
		w("  for f in %s; do [ -f \"%s/$f\" ] && [ ! -L \"%s/$f\" ] && set -- \"$@\" \"%s/$f\"; done", quoteAll(q.archives), imagesDir, imagesDir, imagesDir)
	}
	update := ""
	if q.updateCache {
		update = " --update-cache"
	}
	w("  s hashes; if [ $# -gt 0 ]; then \"$d/anvil\" cluster helper hash --cache %s%s \"$@\" || sha256sum \"$@\"; fi", hashCacheFile, update)
	if q.status {
		w("  s status; [ -f %s ] && [ -x %s/anvil ] && timeout 20 %s/anvil status -o json; echo \"@exit=$?\"", nodeStateFile, hostfs.LinkDir, hostfs.LinkDir)
	}
	w(") >&4 &")
	w("s files; grep -sH '' %s", strings.Join(factFiles(q.version), " "))
	w("s uname; uname -rm")
	w("s addresses; ip -o addr show scope global")
	w("s listen; if ! { [ -f %s ] || [ -f %s ]; }; then ss -Hltnp || { echo '#proc'; cat /proc/net/tcp /proc/net/tcp6; }; fi", nodeStateFile, agent.KubeconfigFile)
	w("s systemd; systemctl is-system-running")
	w("s units; systemctl is-active %s", strings.Join(anvilUnits(), " "))
	w("s zstd; command -v zstd")
	if q.kernel {
		w("%s", kernelScript())
	}
	w("s links")
	for _, d := range slices.Sorted(maps.Keys(q.linkNames())) {
		var expr []string
		for _, n := range q.linkNames()[d] {
			expr = append(expr, "-name "+sshx.ShellQuote(n))
		}
		w("find %s -mindepth 1 -maxdepth 1 \\( %s \\) -printf '%%p %%l\\n'", d, strings.Join(expr, " -o "))
	}
	w("s agent; [ -f %s ] && echo kubeconfig; [ -e %s ] && echo unit", agent.KubeconfigFile, agentUnitFile)
	w("s admin; [ -f %s ] && sha256sum %s", adminKubeconfigOnHost, adminKubeconfigOnHost)
	w("s leftovers; for p in %s; do [ -e \"$p\" ] && echo \"$p\"; done", strings.Join(leftoverPaths(), " "))
	w("s owned; for p in %s; do [ -e \"$p\" ] && echo \"$p\"; done", strings.Join(ownedPaths(), " "))
	w("wait")
	w("s end")
	return b.String()
}

// linkNames are the names to look for in each link directory: anvil's
// own in /usr/local/bin, and the request's.
func (q factsRequest) linkNames() map[string][]string {
	out := map[string][]string{hostfs.LinkDir: {images.AnvilBinary}}
	for d, names := range q.links {
		for _, n := range names {
			if !slices.Contains(out[d], n) {
				out[d] = append(out[d], n)
			}
		}
	}
	return out
}

// quoteAll is names as shell words.
func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = sshx.ShellQuote(n)
	}
	return strings.Join(q, " ")
}

// factFiles are the small files the facts read, in one grep.
func factFiles(version string) []string {
	return []string{"/etc/os-release", "/proc/sys/kernel/hostname", "/etc/machine-id",
		path.Join(binDir(version), images.ManifestFile), nodeStateFile, clusterFileOnHost, nodepkg.StackStateFile}
}

// stampWriter keeps what a command writes and notes when the clock line
// arrived.
type stampWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	arrived time.Time
}

func (w *stampWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.arrived.IsZero() {
		b := w.buf.Bytes()
		if i := bytes.Index(b, []byte(sectionMark+"time@@\n")); i >= 0 && bytes.Count(b[i:], []byte("\n")) >= 2 {
			w.arrived = time.Now()
		}
	}
	return len(p), nil
}

// gatherFacts runs the facts script on h.
func (r *run) gatherFacts(ctx context.Context, h *host, q factsRequest) (*Facts, error) {
	out := &stampWriter{}
	sent := time.Now()
	var errOut bytes.Buffer
	if err := h.client.RunAsRoot(ctx, factsScript(q), nil, out, &errOut); err != nil {
		return nil, fmt.Errorf("gather facts: %w", err)
	}
	f, err := parseFacts(append(out.buf.Bytes(), errOut.Bytes()...), sent, out.arrived)
	if err != nil {
		return nil, fmt.Errorf("gather facts: %w", err)
	}
	return f, nil
}

// parseFacts reads the facts script's output (stdout, then stderr). sent
// is when the command was started and arrived when its clock line came
// back.
func parseFacts(out []byte, sent, arrived time.Time) (*Facts, error) {
	sec := sections(out)
	if _, ok := sec["end"]; !ok {
		return nil, fmt.Errorf("the facts script ended early; it printed:\n%s", tailString(string(out), 800))
	}
	f := &Facts{Installed: map[string]string{}, Archives: map[string]string{}, Links: map[string]string{}, Units: map[string]string{}}
	if t, err := parseEpoch(first(sec["time"])); err == nil && !arrived.IsZero() {
		mid := sent.Add(arrived.Sub(sent) / 2)
		f.ClockSkew = t.Sub(mid).Round(time.Millisecond)
		f.ClockUncertainty = (arrived.Sub(sent) / 2).Round(time.Millisecond)
	}
	files := splitFiles(sec["files"], factFiles(""))
	osr := osRelease(files["/etc/os-release"])
	f.OS, f.OSID, f.OSVersion = osr["PRETTY_NAME"], osr["ID"], osr["VERSION_ID"]
	if u := strings.Fields(first(sec["uname"])); len(u) == 2 {
		f.Kernel, f.Arch = u[0], u[1]
	}
	f.Hostname = first(files["/proc/sys/kernel/hostname"])
	f.MachineID = first(files["/etc/machine-id"])
	f.Addresses = parseAddresses(sec["addresses"])
	f.Listening = parseListening(sec["listen"])
	f.Systemd = first(sec["systemd"])
	for i, u := range anvilUnits() {
		if i < len(sec["units"]) {
			f.Units[u] = sec["units"][i]
		}
	}
	f.HasZstd = first(sec["zstd"]) != ""
	if lines, ok := sec["kernel"]; ok {
		f.KernelSupport = parseKernel(lines)
	}
	for _, l := range sec["links"] {
		name, target, _ := strings.Cut(l, " ")
		f.Links[name] = strings.TrimSpace(target)
	}
	if m := files[images.ManifestFile]; len(m) > 0 {
		f.Manifest = []byte(strings.Join(m, "\n") + "\n")
	}
	f.readHashes(sec["hashes"])
	node, err := parseNodeState(files[nodeStateFile])
	if err != nil {
		return nil, err
	}
	f.Node = node
	if st := strings.Join(files[nodepkg.StackStateFile], "\n"); st != "" {
		f.NodeStack = &nodepkg.StackState{}
		if err := json.Unmarshal([]byte(st), f.NodeStack); err != nil {
			return nil, fmt.Errorf("read %s: %w", nodepkg.StackStateFile, err)
		}
	}
	f.AgentUnit = slices.Contains(sec["agent"], "unit")
	f.AgentJoined = slices.Contains(sec["agent"], "kubeconfig") && f.Units["anvil-agent.service"] == "active"
	if sum, _, _ := strings.Cut(first(sec["admin"]), " "); isSHA256(sum) {
		f.AdminKubeconfigSHA256 = sum
	}
	f.ClusterName = clusterName(files[clusterFileOnHost])
	if !f.Member() {
		f.Leftovers = sec["leftovers"]
	}
	f.Owned = sec["owned"]
	f.Status, f.StatusErr = parseStatus(sec["status"], f.Node != nil)
	return f, nil
}

// readHashes reads the hashes section: the sha256 of each installed
// file (by its name in the version directory) and image archive, and the
// version of the anvil installed.
func (f *Facts) readHashes(lines []string) {
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, hashVersionPrefix); ok {
			f.AnvilVersion = strings.TrimSpace(v)
			continue
		}
		sum, p, ok := strings.Cut(l, "  ")
		if !ok || !isSHA256(sum) {
			continue
		}
		if name, ok := strings.CutPrefix(p, imagesDir+"/"); ok {
			f.Archives[name] = sum
		} else if rel, ok := strings.CutPrefix(p, hostfs.BinDir+"/"); ok {
			// <version>/<name>
			if _, name, ok := strings.Cut(rel, "/"); ok {
				f.Installed[name] = sum
			}
		}
	}
}

// parseNodeState reads the node state file's lines; nil when there are
// none (the machine is not a node).
func parseNodeState(lines []string) (*master.NodeState, error) {
	n := strings.Join(lines, "\n")
	if n == "" {
		return nil, nil
	}
	var st master.NodeState
	if err := json.Unmarshal([]byte(n), &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", nodeStateFile, err)
	}
	return &st, nil
}

// clusterName is the name in the cluster file's lines; "" when there is
// none or the file does not parse.
func clusterName(lines []string) string {
	c := strings.Join(lines, "\n")
	if c == "" {
		return ""
	}
	var named struct {
		Name string `yaml:"name"`
	}
	if yaml.Unmarshal([]byte(c), &named) != nil {
		return ""
	}
	return named.Name
}

// parseStatus reads the status section: `anvil status -o json`'s output,
// then a line with its exit. Empty output is a problem only on a node.
func parseStatus(lines []string, isNode bool) (st *master.Status, problem string) {
	if len(lines) == 0 {
		return nil, ""
	}
	exit := lines[len(lines)-1]
	body := strings.Join(lines[:len(lines)-1], "\n")
	if body == "" {
		if isNode {
			return nil, "anvil status printed nothing (" + strings.TrimPrefix(exit, "@") + ")"
		}
		return nil, ""
	}
	var s master.Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return nil, fmt.Sprintf("anvil status -o json: %v", err)
	}
	return &s, ""
}

// splitFiles sorts the lines `grep -H` printed by file. The manifest is named by
// its base name, since its directory depends on the version.
func splitFiles(lines []string, paths []string) map[string][]string {
	out := map[string][]string{}
	manifest := "/" + images.ManifestFile + ":"
	for _, l := range lines {
		if i := strings.Index(l, manifest); i > 0 && strings.HasPrefix(l, hostfs.BinDir+"/") {
			out[images.ManifestFile] = append(out[images.ManifestFile], l[i+len(manifest):])
			continue
		}
		for _, p := range paths {
			if rest, ok := strings.CutPrefix(l, p+":"); ok {
				out[p] = append(out[p], rest)
				break
			}
		}
	}
	return out
}

var markRE = regexp.MustCompile(`^` + regexp.QuoteMeta(sectionMark) + `([a-z-]+)@@$`)

// sections splits the script's output by marker into trimmed, non-empty
// lines.
func sections(out []byte) map[string][]string {
	sec := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := markRE.FindStringSubmatch(line); m != nil {
			cur = m[1]
			sec[cur] = sec[cur][:0:0]
			continue
		}
		if t := strings.TrimRight(line, " \t\r"); cur != "" && strings.TrimSpace(t) != "" {
			sec[cur] = append(sec[cur], t)
		}
	}
	return sec
}

func first(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.TrimSpace(lines[0])
}

func parseEpoch(s string) (time.Time, error) {
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	var ns int64
	if frac != "" {
		frac = (frac + "000000000")[:9]
		if ns, err = strconv.ParseInt(frac, 10, 64); err != nil {
			return time.Time{}, err
		}
	}
	return time.Unix(n, ns), nil
}

func osRelease(lines []string) map[string]string {
	out := map[string]string{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, "=")
		if ok {
			out[k] = strings.Trim(v, `"'`)
		}
	}
	return out
}

// parseAddresses reads `ip -o addr show scope global`.
func parseAddresses(lines []string) []netip.Addr {
	var out []netip.Addr
	for _, l := range lines {
		f := strings.Fields(l)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "inet" && f[i] != "inet6" {
				continue
			}
			if p, err := netip.ParsePrefix(f[i+1]); err == nil && !slices.Contains(out, p.Addr()) {
				out = append(out, p.Addr())
			}
		}
	}
	return out
}

var ssProcRE = regexp.MustCompile(`users:\(\("([^"]+)"`)

// parseListening reads `ss -Hltnp`, or /proc/net/tcp{,6} after a "#proc"
// line when ss is missing.
func parseListening(lines []string) []Listener {
	var out []Listener
	proc := false
	for _, l := range lines {
		if l == "#proc" {
			proc = true
			continue
		}
		f := strings.Fields(l)
		if proc {
			// sl local_address rem_address st ...; 0A is LISTEN.
			if len(f) < 4 || f[3] != "0A" {
				continue
			}
			if ap, ok := procAddr(f[1]); ok {
				out = append(out, Listener{Addr: ap})
			}
			continue
		}
		if len(f) < 4 {
			continue
		}
		ap, err := netip.ParseAddrPort(strings.NewReplacer("*:", "0.0.0.0:", "%lo", "").Replace(stripZone(f[3])))
		if err != nil {
			continue
		}
		ln := Listener{Addr: ap}
		if m := ssProcRE.FindStringSubmatch(l); m != nil {
			ln.Process = m[1]
		}
		out = append(out, ln)
	}
	return out
}

// stripZone removes an interface zone ("[fe80::1%eth0]:22", "127.0.0.53%lo:53").
func stripZone(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	j := strings.LastIndexByte(s, ':')
	if j <= i {
		return s[:i] // no port after the zone: not an address ss prints
	}
	if s[j-1] == ']' {
		return s[:i] + "]" + s[j:]
	}
	return s[:i] + s[j:]
}

// procAddr reads /proc/net/tcp's "0100007F:0CEA" (little-endian words).
func procAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	for i := 0; i+4 <= len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
