package cis

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/internal/hostfs"
)

// Component is a program of the control plane the benchmark looks at.
type Component string

// The components, by the name of their program (etcd is `anvil etcd`).
const (
	APIServer         Component = "kube-apiserver"
	ControllerManager Component = "kube-controller-manager"
	Scheduler         Component = "kube-scheduler"
	Etcd              Component = "etcd"
)

// Components lists them in start order.
func Components() []Component {
	return []Component{Etcd, APIServer, ControllerManager, Scheduler}
}

// Paths of anvil's own that the benchmark looks for. Units, manifests and
// process specs are named as package component renders them, and etcd's
// configuration is where package master writes it (TestRenderedMaster and
// TestChecks hold them together).
const (
	processSpecDir = hostfs.AnvilConfDir + "/processes"
	cniConfDir     = "/etc/cni/net.d"
	cniDataDir     = "/var/lib/cni/networks"
	// anvilEtcdConfig is the file `anvil etcd` reads when no --config
	// names one: its flag's default, the file anvil renders.
	anvilEtcdConfig = hostfs.AnvilConfDir + "/etcd.yaml"
)

// unitName is the systemd unit a component runs as.
func unitName(c Component) string {
	if c == Etcd {
		return "anvil-etcd.service"
	}
	return string(c) + ".service"
}

// Flag is one effective setting of a component: a command-line flag, or
// the key of its configuration file that stands for one.
type Flag struct {
	// Values are what it was given, in order: a flag given twice has two.
	// A scalar flag keeps the last (Get), a list flag appends them all
	// (List), as the components' flag parsing (pflag) does.
	Values []string
	// From says where the values came from when not the command line: a
	// configuration file (and its key), or a program's default.
	From string
}

// Flags are a component's effective settings by flag name (without
// dashes).
type Flags map[string]Flag

// ParseArgs reads a command line's flags: --name=value, --name value, or
// a bare --name (true); one dash or two; "--" ends the flags. Without the
// components' flag definitions it cannot tell a boolean flag, which never
// takes the next word as its value, from one that does: a word after
// --name that does not start with a dash is taken as its value, which is
// how every non-boolean flag is written (a component given `--profiling
// false` refuses the stray word and does not start).
func ParseArgs(args []string) Flags {
	out := Flags{}
	add := func(name, v string) {
		f := out[name]
		f.Values = append(f.Values, v)
		out[name] = f
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if n, v, ok := strings.Cut(name, "="); ok {
			if n != "" {
				add(n, v)
			}
			continue
		}
		if name == "" || strings.HasPrefix(name, "-") {
			continue
		}
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			add(name, args[i+1])
			i++
			continue
		}
		add(name, "true")
	}
	return out
}

// Get returns a flag's value (its last, when given more than once) and
// whether it is set.
func (f Flags) Get(name string) (string, bool) {
	v, ok := f[name]
	if !ok || len(v.Values) == 0 {
		return "", false
	}
	return v.Values[len(v.Values)-1], true
}

// List splits a comma-separated flag into its elements, those of every
// time it was given.
func (f Flags) List(name string) []string {
	var out []string
	for _, v := range f[name].Values {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
	}
	return out
}

// Show is how the report names a flag as found: "--name=value" (once per
// time it was given), with the file it came from, or "--name not set".
func (f Flags) Show(name string) string {
	v, ok := f[name]
	if !ok || len(v.Values) == 0 {
		return "--" + name + " not set"
	}
	var parts []string
	for _, val := range v.Values {
		parts = append(parts, "--"+name+"="+val)
	}
	s := strings.Join(parts, " ")
	if v.From != "" {
		s += " (from " + v.From + ")"
	}
	return s
}

// set makes name's value v, read from the file from.
func (f Flags) set(name, v, from string) { f[name] = Flag{Values: []string{v}, From: from} }

// Running is a component's process.
type Running struct {
	PID int
	// User runs it (the owner of /proc/PID).
	User string
	Args []string
	// Flags are its effective settings: the command line, and for etcd
	// and the scheduler what their configuration file sets.
	Flags Flags
}

// Anonymous is how the apiserver treats requests without credentials.
type Anonymous struct {
	Enabled bool
	// Paths are the only paths anonymous requests may reach (the
	// authentication config's anonymous.conditions); none is every path.
	Paths []string
	// Source says where this was read: a flag, a file, or the default.
	Source string
}

// Encryption is the apiserver's encryption at rest of Secrets.
type Encryption struct {
	// Path is the --encryption-provider-config file; "" when not set.
	Path string
	// Providers for secrets, in order: the first encrypts every write.
	Providers []string
}

// Facts are what the benchmark's checks look at, gathered once from a
// master. They hold names, modes, flags and the kinds of things, never a
// key or a secret.
type Facts struct {
	// Layout is how anvil runs the control plane here, told by which of
	// its definitions exist: systemd, static-pod or process.
	Layout string
	// Procs are the running components; a missing one is not running.
	Procs map[Component]*Running
	// Specs are the files that define each component: its unit, static
	// pod manifest or process spec (those that exist), then the
	// configuration file its --config names; none when it has no unit,
	// manifest or spec.
	Specs map[Component][]string
	// AdminKubeconfigs are admin.conf and super-admin.conf (when there is
	// one); SchedulerKubeconfigs and ControllerManagerKubeconfigs those
	// their flags and configuration name.
	AdminKubeconfigs             []string
	SchedulerKubeconfigs         []string
	ControllerManagerKubeconfigs []string
	// EtcdDataDir is etcd's data-dir.
	EtcdDataDir string
	// PKIDir is /etc/kubernetes/pki; PKI is it and everything in it.
	PKIDir string
	PKI    []File
	// CNI are the files (not directories) of the CNI configuration and of
	// host-local's reservations.
	CNI []File
	// Files are every path above that exists, by path.
	Files map[string]File

	Anonymous Anonymous
	// Authorizers are the apiserver's authorization modes, in order.
	Authorizers []string
	Encryption  Encryption
	// CAKeys are, per CA file a flag names, the SHA-256 of each
	// certificate's public key.
	CAKeys map[string][]string
	// Problems are files a flag names that could not be read or made
	// sense of; the checks that need them fail.
	Problems map[string]string
}

// Options shape Gather.
type Options struct {
	// Root prefixes anvil's own paths (units, manifests, kubeconfigs,
	// PKI) as --root does; the paths in the components' flags are used as
	// they are.
	Root hostfs.Root
}

// Gather reads the facts from h: the components' processes and the files
// they and anvil's layouts name. A component that is not running is a fact
// (its checks fail); two processes of one component are an error, since
// the benchmark could not tell which is this master's.
func Gather(ctx context.Context, h Host, o Options) (*Facts, error) {
	ps, err := h.Processes(ctx)
	if err != nil {
		return nil, err
	}
	f := &Facts{
		Procs:    map[Component]*Running{},
		Specs:    map[Component][]string{},
		Files:    map[string]File{},
		CAKeys:   map[string][]string{},
		Problems: map[string]string{},
		PKIDir:   o.Root.Path(hostfs.PKIDir),
	}
	for _, p := range ps {
		c, args, ok := identify(p.Args)
		if !ok {
			continue
		}
		if old := f.Procs[c]; old != nil {
			return nil, fmt.Errorf("two %s processes (%d and %d): cannot tell which is this master's", c, old.PID, p.PID)
		}
		fl := ParseArgs(args)
		if c == Etcd && path.Base(p.Args[0]) == "anvil" && configFile(c, fl) == "" {
			fl.set("config", anvilEtcdConfig, "anvil etcd's default")
		}
		f.Procs[c] = &Running{PID: p.PID, Args: p.Args, Flags: fl}
	}

	// Configuration files, read before the stat so that the files they
	// name are stat'ed with the rest.
	if err := f.readEtcdConfig(ctx, h); err != nil {
		return nil, err
	}
	if err := f.readSchedulerConfig(ctx, h); err != nil {
		return nil, err
	}
	if err := f.readAPIServerConfigs(ctx, h); err != nil {
		return nil, err
	}

	// Everything to stat, in one go.
	var want []string
	candidates := map[Component][]string{}
	for _, c := range Components() {
		cs := []string{
			o.Root.Join(hostfs.UnitDir, unitName(c)),
			o.Root.Join(hostfs.ManifestsDir, string(c)+".yaml"),
			o.Root.Join(processSpecDir, string(c)+".json"),
		}
		candidates[c] = cs
		want = append(want, cs...)
	}
	f.AdminKubeconfigs = []string{o.Root.Kubeconfig("admin.conf"), o.Root.Kubeconfig("super-admin.conf")}
	f.SchedulerKubeconfigs = f.kubeconfigs(Scheduler, o.Root.Kubeconfig("scheduler.conf"))
	f.ControllerManagerKubeconfigs = f.kubeconfigs(ControllerManager, o.Root.Kubeconfig("controller-manager.conf"))
	f.EtcdDataDir = o.Root.Path(hostfs.EtcdDataDir)
	if r := f.Procs[Etcd]; r != nil {
		if d, ok := r.Flags.Get("data-dir"); ok {
			f.EtcdDataDir = d
		}
	}
	want = append(want, f.AdminKubeconfigs...)
	want = append(want, f.SchedulerKubeconfigs...)
	want = append(want, f.ControllerManagerKubeconfigs...)
	want = append(want, f.EtcdDataDir)
	for _, c := range Components() {
		if r := f.Procs[c]; r != nil {
			want = append(want, "/proc/"+strconv.Itoa(r.PID))
			if cfg := configFile(c, r.Flags); cfg != "" {
				want = append(want, cfg)
			}
		}
	}
	stats, err := h.Stat(ctx, want...)
	if err != nil {
		return nil, err
	}
	for _, s := range stats {
		f.Files[s.Path] = s
	}

	for _, c := range Components() {
		for _, p := range candidates[c] {
			if _, ok := f.Files[p]; ok {
				f.Specs[c] = append(f.Specs[c], p)
			}
		}
		if r := f.Procs[c]; r != nil {
			if s, ok := f.Files["/proc/"+strconv.Itoa(r.PID)]; ok {
				r.User = s.Owner
			}
			// The configuration file is part of a definition, never one
			// by itself.
			if cfg := configFile(c, r.Flags); cfg != "" && len(f.Specs[c]) > 0 {
				f.Specs[c] = append(f.Specs[c], cfg)
			}
		}
	}
	f.Layout = layoutOf(f.Specs[APIServer])
	// super-admin.conf is made on the first master only.
	if _, ok := f.Files[f.AdminKubeconfigs[1]]; !ok {
		f.AdminKubeconfigs = f.AdminKubeconfigs[:1]
	}

	if f.PKI, err = h.Tree(ctx, f.PKIDir); err != nil {
		return nil, err
	}
	for _, dir := range []string{cniConfDir, cniDataDir} {
		files, err := h.Tree(ctx, o.Root.Path(dir))
		if err != nil {
			return nil, err
		}
		for _, file := range files {
			if !file.IsDir() {
				f.CNI = append(f.CNI, file)
			}
		}
	}
	for _, file := range append(slices.Clone(f.PKI), f.CNI...) {
		f.Files[file.Path] = file
	}
	return f, f.readCAs(ctx, h)
}

// identify tells which component a command line runs, and returns its
// arguments after the program (and anvil's subcommand).
func identify(args []string) (Component, []string, bool) {
	if len(args) == 0 {
		return "", nil, false
	}
	switch prog := path.Base(args[0]); prog {
	case string(APIServer), string(ControllerManager), string(Scheduler):
		return Component(prog), args[1:], true
	case "etcd":
		return Etcd, args[1:], true
	case "anvil":
		// `anvil etcd --config=…` is the member; `anvil etcd members`
		// and the like are commands that come and go.
		if len(args) > 1 && args[1] == "etcd" && !slices.ContainsFunc(args[2:], func(a string) bool { return !strings.HasPrefix(a, "-") }) {
			return Etcd, args[2:], true
		}
	}
	return "", nil, false
}

// configFile is the configuration file a component's flags name: etcd's
// and the scheduler's --config.
func configFile(c Component, fl Flags) string {
	switch c {
	case Etcd:
		if v, ok := fl.Get("config"); ok {
			return v
		}
		v, _ := fl.Get("config-file")
		return v
	case Scheduler:
		v, _ := fl.Get("config")
		return v
	}
	return ""
}

// layoutOf names the layout by the apiserver's definitions.
func layoutOf(specs []string) string {
	var out []string
	for _, s := range specs {
		switch {
		case strings.HasSuffix(s, ".service"):
			out = append(out, "systemd")
		case strings.HasSuffix(s, ".yaml") && strings.Contains(s, "/manifests/"):
			out = append(out, "static-pod")
		case strings.HasSuffix(s, ".json"):
			out = append(out, "process")
		}
	}
	if len(out) == 0 {
		return "unknown"
	}
	return strings.Join(out, "+")
}

// kubeconfigs are the kubeconfig files a component's settings name, or
// def when they name none.
func (f *Facts) kubeconfigs(c Component, def string) []string {
	r := f.Procs[c]
	if r == nil {
		return []string{def}
	}
	var out []string
	for _, n := range []string{"kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig"} {
		if v, ok := r.Flags.Get(n); ok && v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		out = []string{def}
	}
	return out
}

// readYAML reads and decodes a configuration file a flag names; a file
// that is missing or not YAML is a problem, not an error.
func (f *Facts) readYAML(ctx context.Context, h Host, file string, into any) (bool, error) {
	b, err := h.ReadFile(ctx, file)
	if errors.Is(err, fs.ErrNotExist) {
		f.Problems[file] = "no such file"
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		f.Problems[file] = err.Error()
		return false, nil
	}
	return true, nil
}

// readEtcdConfig turns etcd's configuration file into the flags it stands
// for: a key of client-transport-security is the flag of that name, one of
// peer-transport-security the peer- flag. Given a configuration file, etcd
// ignores its other flags and its environment (and `anvil etcd` has no
// flags of etcd's), so the file's keys are all that is left besides the
// flag naming it.
func (f *Facts) readEtcdConfig(ctx context.Context, h Host) error {
	r := f.Procs[Etcd]
	if r == nil {
		return nil
	}
	file := configFile(Etcd, r.Flags)
	if file == "" {
		return nil
	}
	var doc map[string]any
	if ok, err := f.readYAML(ctx, h, file, &doc); !ok || err != nil {
		return err
	}
	fl := Flags{}
	for _, n := range []string{"config", "config-file"} {
		if v, ok := r.Flags[n]; ok {
			fl[n] = v
		}
	}
	set := func(name string, v any) {
		switch v := v.(type) {
		case map[string]any:
			return
		case []any:
			var parts []string
			for _, e := range v {
				parts = append(parts, fmt.Sprint(e))
			}
			fl.set(name, strings.Join(parts, ","), file)
		case nil:
			fl.set(name, "", file)
		default:
			fl.set(name, fmt.Sprint(v), file)
		}
	}
	for k, v := range doc {
		set(k, v)
	}
	for section, prefix := range map[string]string{"client-transport-security": "", "peer-transport-security": "peer-"} {
		m, _ := doc[section].(map[string]any)
		for k, v := range m {
			set(prefix+k, v)
		}
	}
	r.Flags = fl
	return nil
}

// readSchedulerConfig takes what the scheduler's configuration file sets
// of what the benchmark asks: profiling, and the kubeconfig. With --config
// the scheduler ignores its deprecated flags for both.
func (f *Facts) readSchedulerConfig(ctx context.Context, h Host) error {
	r := f.Procs[Scheduler]
	if r == nil {
		return nil
	}
	file := configFile(Scheduler, r.Flags)
	if file == "" {
		return nil
	}
	var doc struct {
		EnableProfiling  *bool `yaml:"enableProfiling"`
		ClientConnection struct {
			Kubeconfig string `yaml:"kubeconfig"`
		} `yaml:"clientConnection"`
	}
	if ok, err := f.readYAML(ctx, h, file, &doc); !ok || err != nil {
		return err
	}
	delete(r.Flags, "profiling")
	if doc.EnableProfiling != nil {
		r.Flags.set("profiling", strconv.FormatBool(*doc.EnableProfiling), file+" enableProfiling")
	}
	delete(r.Flags, "kubeconfig")
	if doc.ClientConnection.Kubeconfig != "" {
		r.Flags.set("kubeconfig", doc.ClientConnection.Kubeconfig, file+" clientConnection.kubeconfig")
	}
	return nil
}

// readAPIServerConfigs reads what the apiserver's authentication,
// authorization and encryption configurations say of anonymous requests,
// the authorizers and the providers of Secrets.
func (f *Facts) readAPIServerConfigs(ctx context.Context, h Host) error {
	r := f.Procs[APIServer]
	if r == nil {
		return nil
	}
	// Anonymous requests: the flag, else the authentication config's
	// anonymous section, else the default (allowed everywhere).
	f.Anonymous = Anonymous{Enabled: true, Source: "the default of --anonymous-auth (true)"}
	if v, ok := r.Flags.Get("anonymous-auth"); ok {
		f.Anonymous = Anonymous{Enabled: v == "true", Source: r.Flags.Show("anonymous-auth")}
	} else if file, ok := r.Flags.Get("authentication-config"); ok {
		var doc struct {
			Anonymous *struct {
				Enabled    bool `yaml:"enabled"`
				Conditions []struct {
					Path string `yaml:"path"`
				} `yaml:"conditions"`
			} `yaml:"anonymous"`
		}
		ok, err := f.readYAML(ctx, h, file, &doc)
		if err != nil {
			return err
		}
		if ok && doc.Anonymous != nil {
			f.Anonymous = Anonymous{Enabled: doc.Anonymous.Enabled, Source: file + " anonymous"}
			for _, c := range doc.Anonymous.Conditions {
				f.Anonymous.Paths = append(f.Anonymous.Paths, c.Path)
			}
		}
	}

	// Authorization: the modes, else the authorization config's
	// authorizers, else the default (AlwaysAllow).
	if modes := r.Flags.List("authorization-mode"); len(modes) > 0 {
		f.Authorizers = modes
	} else if file, ok := r.Flags.Get("authorization-config"); ok {
		var doc struct {
			Authorizers []struct {
				Type string `yaml:"type"`
			} `yaml:"authorizers"`
		}
		ok, err := f.readYAML(ctx, h, file, &doc)
		if err != nil {
			return err
		}
		if ok {
			for _, a := range doc.Authorizers {
				f.Authorizers = append(f.Authorizers, a.Type)
			}
		}
	} else {
		f.Authorizers = []string{"AlwaysAllow"}
	}

	// Encryption at rest: only the providers' kinds are kept, never their
	// keys.
	if file, ok := r.Flags.Get("encryption-provider-config"); ok {
		f.Encryption.Path = file
		var doc struct {
			Resources []struct {
				Resources []string         `yaml:"resources"`
				Providers []map[string]any `yaml:"providers"`
			} `yaml:"resources"`
		}
		ok, err := f.readYAML(ctx, h, file, &doc)
		if err != nil {
			return err
		}
		if ok {
		resources:
			for _, res := range doc.Resources {
				for _, name := range res.Resources {
					if name != "secrets" && name != "*.*" && name != "*." {
						continue
					}
					for _, p := range res.Providers {
						for kind := range p {
							f.Encryption.Providers = append(f.Encryption.Providers, kind)
						}
					}
					break resources
				}
			}
		}
	}
	return nil
}

// readCAs fingerprints the public keys of the CA files the apiserver and
// etcd trust, so that 2.7 can tell whether etcd has a CA of its own.
func (f *Facts) readCAs(ctx context.Context, h Host) error {
	var files []string
	if r := f.Procs[APIServer]; r != nil {
		if v, ok := r.Flags.Get("client-ca-file"); ok {
			files = append(files, v)
		}
	}
	if r := f.Procs[Etcd]; r != nil {
		for _, n := range []string{"trusted-ca-file", "peer-trusted-ca-file"} {
			if v, ok := r.Flags.Get(n); ok && v != "" {
				files = append(files, v)
			}
		}
	}
	for _, file := range files {
		if _, done := f.CAKeys[file]; done {
			continue
		}
		b, err := h.ReadFile(ctx, file)
		if errors.Is(err, fs.ErrNotExist) {
			f.Problems[file] = "no such file"
			continue
		}
		if err != nil {
			return err
		}
		keys, err := publicKeyHashes(b)
		if err != nil {
			f.Problems[file] = err.Error()
			continue
		}
		f.CAKeys[file] = keys
	}
	return nil
}

// publicKeyHashes are the SHA-256 of the public key of each certificate in
// a PEM bundle.
func publicKeyHashes(b []byte) ([]string, error) {
	var out []string
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		out = append(out, hex.EncodeToString(sum[:]))
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in it")
	}
	return out, nil
}
