package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/agekey"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/sshx"
)

// Where labs live unless Config says otherwise. The state directory holds
// one directory per lab: state, keys, known_hosts, cluster file and the
// machines' writable layers; the cache holds the base.
const (
	DefaultStateDir = hostfs.StateDir + "/lab"
	DefaultCacheDir = "/var/cache/anvil/lab"
)

// Config is how a Manager works; the zero value of each field means its
// default.
type Config struct {
	StateDir string
	CacheDir string
	// Mirror is the Debian mirror the base is built from; default: the one
	// this host's apt uses.
	Mirror string
	// Install lets the lab apt-get install systemd-container and
	// debootstrap when they are missing.
	Install bool
	// BootTimeout bounds how long a machine may take to answer ssh and
	// finish booting (default 3 min: two cores booting ten machines while
	// something else compiles).
	BootTimeout time.Duration
	// StopTimeout is how long a graceful stop waits before pulling the
	// plug (default 30 s).
	StopTimeout time.Duration
	// Progress receives lines for the person waiting; nil discards them.
	Progress func(string)
	Log      *slog.Logger
}

// Manager creates, inspects and removes the labs of this machine.
type Manager struct {
	stateDir, cacheDir string
	mirror             string
	install            bool
	bootTimeout        time.Duration
	stopTimeout        time.Duration
	progress           func(string)
	log                *slog.Logger
}

// New returns a Manager for cfg.
func New(cfg Config) *Manager {
	m := &Manager{
		stateDir: cfg.StateDir, cacheDir: cfg.CacheDir, mirror: cfg.Mirror, install: cfg.Install,
		bootTimeout: cfg.BootTimeout, stopTimeout: cfg.StopTimeout, progress: cfg.Progress, log: cfg.Log,
	}
	if m.stateDir == "" {
		m.stateDir = DefaultStateDir
	}
	if m.cacheDir == "" {
		m.cacheDir = DefaultCacheDir
	}
	if m.bootTimeout <= 0 {
		m.bootTimeout = 3 * time.Minute
	}
	if m.stopTimeout <= 0 {
		m.stopTimeout = 30 * time.Second
	}
	if m.progress == nil {
		m.progress = func(string) {}
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m
}

func (m *Manager) paths(name string) paths { return paths{dir: filepath.Join(m.stateDir, name)} }

// Spec is the lab `up` makes.
type Spec struct {
	Name    string
	Masters int
	Workers int
	// Subnet for the lab; the zero value picks a free /24 of DefaultPool.
	Subnet netip.Prefix
}

// Validate checks the spec on its own.
func (s Spec) Validate() error {
	if err := ValidateName(s.Name); err != nil {
		return err
	}
	if s.Masters < 1 || s.Masters > MaxMasters {
		return fmt.Errorf("masters: %d, want 1 to %d", s.Masters, MaxMasters)
	}
	if s.Workers < 0 || s.Workers > MaxWorkers {
		return fmt.Errorf("workers: %d, want 0 to %d", s.Workers, MaxWorkers)
	}
	return nil
}

// MachineState says whether a machine is powered on.
type MachineState string

const (
	Running MachineState = "running"
	Stopped MachineState = "stopped"
)

// Machine is one machine of a lab as `status` reports it.
type Machine struct {
	Name    string        `json:"name"`
	Role    v1alpha1.Role `json:"role"`
	Address netip.Addr    `json:"address"`
	State   MachineState  `json:"state"`
	PID     int           `json:"pid,omitempty"`
	// Link is the machine's cable to the lab bridge: up, cut, or none
	// while the machine is off.
	Link LinkState `json:"link"`
	// Interface is the host end of the machine's veth, on the bridge.
	Interface string `json:"interface"`
	// HostKey is the SHA256 fingerprint of the machine's ed25519 host key.
	HostKey string `json:"hostKey"`
	// Memory is the proportional set size of the machine's processes.
	Memory uint64 `json:"memoryBytes,omitempty"`
}

// Status is a lab and where its files are.
type Status struct {
	Name    string       `json:"name"`
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"` // the bridge's address
	// VIP is an address of the subnet no machine uses; with two masters or
	// more the cluster file sets it as controlPlane.vip and the endpoint.
	VIP         netip.Addr `json:"vip"`
	Bridge      string     `json:"bridge"`
	ClusterFile string     `json:"clusterFile"`
	SSHKey      string     `json:"sshKey"`
	// BackupKey is the age identity the cluster's backups are encrypted to.
	BackupKey  string `json:"backupKey"`
	KnownHosts string `json:"knownHosts"`
	// SSHUser is who the cluster file connects as; SudoUser is the
	// non-root user with passwordless sudo every machine also has.
	SSHUser  string    `json:"sshUser"`
	SudoUser string    `json:"sudoUser"`
	Base     string    `json:"base"`
	Dir      string    `json:"dir"`
	Machines []Machine `json:"machines"`
}

// Host returns the machine called name.
func (s *Status) Host(name string) (Machine, bool) {
	for _, m := range s.Machines {
		if m.Name == name {
			return m, true
		}
	}
	return Machine{}, false
}

// Up creates the lab (or completes it: a second Up with the same spec
// starts what is stopped and changes nothing else) and returns once every
// machine answers ssh with the host key in the lab's known_hosts and has
// finished booting.
func (m *Manager) Up(ctx context.Context, spec Spec) (*Status, error) {
	began := time.Now()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := CheckPrerequisites(ctx, m.install, m.progress); err != nil {
		return nil, err
	}
	base, err := m.EnsureBase(ctx)
	if err != nil {
		return nil, err
	}
	p := m.paths(spec.Name)
	lock, err := lockFile(ctx, p.lock(), func() { say(m.progress, "lab %s: waiting for another anvil working on it", spec.Name) })
	if err != nil {
		return nil, err
	}
	defer lock.unlock()

	s, err := m.create(ctx, spec, base, p)
	if err != nil {
		if _, serr := os.Stat(p.state()); errors.Is(serr, fs.ErrNotExist) {
			_ = os.Remove(p.lock()) // nothing was made: leave no trace
		}
		return nil, err
	}
	br, err := ensureBridge(s.Name, s.Subnet)
	if err != nil {
		return nil, err
	}
	if err := m.writeFiles(s, p); err != nil {
		return nil, err
	}

	if err := raiseLimits(inotifyFloors(), m.progress); err != nil {
		return nil, err
	}
	var booting []*machineState
	for i := range s.Machines {
		ms := &s.Machines[i]
		if ms.running() {
			continue
		}
		if err := m.boot(ctx, s, p, br, ms); err != nil {
			_ = saveState(p, s)
			return nil, fmt.Errorf("%w (remove the lab with `anvil lab down --name %s`)", err, s.Name)
		}
		booting = append(booting, ms)
	}
	if err := saveState(p, s); err != nil {
		return nil, err
	}
	if len(booting) > 0 {
		say(m.progress, "lab %s: booting %d machine(s) on %s (%s)", s.Name, len(booting), s.Subnet, s.Bridge)
	}
	if err := m.waitAll(ctx, s, p, booting); err != nil {
		return nil, fmt.Errorf("%w (console logs in %s; remove the lab with `anvil lab down --name %s`)", err, filepath.Join(p.dir, "machines"), s.Name)
	}
	say(m.progress, "lab %s: %d machine(s) ready in %s", s.Name, len(s.Machines), time.Since(began).Round(100*time.Millisecond))
	return m.status(s, p), nil
}

// create loads the lab's state, or makes it: subnet, names, identities,
// keys. The subnet is chosen under a lock shared by all labs, and the
// state saved before anything it describes exists.
func (m *Manager) create(ctx context.Context, spec Spec, base Base, p paths) (*state, error) {
	s, err := loadState(p)
	if err == nil {
		masters, workers := s.counts()
		if masters != spec.Masters || workers != spec.Workers {
			return nil, fmt.Errorf("lab %s exists with %d master(s) and %d worker(s); remove it with `anvil lab down --name %s` to change that", s.Name, masters, workers, s.Name)
		}
		if spec.Subnet.IsValid() && spec.Subnet != s.Subnet {
			return nil, fmt.Errorf("lab %s exists on %s, not %s", s.Name, s.Subnet, spec.Subnet)
		}
		if _, err := os.Stat(s.Base); err != nil {
			return nil, fmt.Errorf("lab %s was built on %s, which is gone: remove the lab with `anvil lab down --name %s`", s.Name, s.Base, s.Name)
		}
		return s, nil
	}
	if !errors.Is(err, ErrNoLab) {
		return nil, err
	}

	global, err := lockFile(ctx, m.globalLock(), nil)
	if err != nil {
		return nil, err
	}
	defer global.unlock()
	subnet, err := m.chooseSubnet(ctx, spec)
	if err != nil {
		return nil, err
	}
	s = &state{Name: spec.Name, Subnet: subnet, Bridge: bridgeName(spec.Name), Base: base.Dir, Created: time.Now().UTC()}
	for _, mp := range planMachines(spec.Name, subnet, spec.Masters, spec.Workers) {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
		s.Machines = append(s.Machines, machineState{
			Name: mp.Name, Role: mp.Role, Address: mp.Address,
			Veth: vethName(spec.Name, mp.Name), MachineID: hex.EncodeToString(id),
		})
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab directory: %w", err)
	}
	if err := saveState(p, s); err != nil {
		return nil, err
	}
	// The bridge carries the subnet's route: once it exists the next lab
	// sees the subnet taken, so make it before letting go of the lock.
	if _, err := ensureBridge(s.Name, s.Subnet); err != nil {
		return nil, err
	}
	say(m.progress, "lab %s: subnet %s, bridge %s", s.Name, s.Subnet, s.Bridge)
	return s, nil
}

func (m *Manager) chooseSubnet(ctx context.Context, spec Spec) (netip.Prefix, error) {
	taken, err := takenPrefixes()
	if err != nil {
		return netip.Prefix{}, err
	}
	others, err := m.List(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, o := range others {
		taken = append(taken, used{o.Subnet, "lab " + o.Name})
	}
	if spec.Subnet.IsValid() {
		return spec.Subnet, checkSubnet(spec.Subnet, spec.Masters+spec.Workers, taken)
	}
	return pickSubnet(netip.MustParsePrefix(DefaultPool), taken)
}

// writeFiles makes the lab's key, each machine's identity (first time
// only), known_hosts, the backup key pair (first time only) and the
// cluster file.
func (m *Manager) writeFiles(s *state, p paths) error {
	if _, err := os.Stat(p.key()); errors.Is(err, fs.ErrNotExist) {
		kp, err := sshx.NewEd25519("anvil-lab-" + s.Name)
		if err != nil {
			return err
		}
		if err := kp.Write(p.key()); err != nil {
			return err
		}
	}
	authorized, err := os.ReadFile(p.key() + ".pub")
	if err != nil {
		return fmt.Errorf("lab key: %w", err)
	}
	for i := range s.Machines {
		ms := &s.Machines[i]
		if ms.HostKey != "" {
			continue // its tree has its identity already
		}
		hk, err := sshx.NewEd25519("root@" + ms.Name)
		if err != nil {
			return err
		}
		id := identity{
			Hostname: ms.Name, MachineID: ms.MachineID,
			HostKey: hk.Private, HostPub: hk.Public,
			Authorized: authorized, Hosts: hostsLines(s),
		}
		if err := os.MkdirAll(p.machine(ms.Name), 0o700); err != nil {
			return err
		}
		if err := prepareTree(s.Base, p.upper(ms.Name), id); err != nil {
			return fmt.Errorf("%s: %w", ms.Name, err)
		}
		ms.HostKey = strings.TrimSpace(string(hk.Public))
		if err := saveState(p, s); err != nil {
			return err
		}
	}
	entries, err := knownHostsEntries(s)
	if err != nil {
		return err
	}
	var kh strings.Builder
	for _, e := range entries {
		kh.WriteString(e.Line() + "\n")
	}
	if _, err := fsutil.EnsureFile(p.knownHosts(), []byte(kh.String()), 0o600, 0o700); err != nil {
		return err
	}
	recipient, _, err := agekey.Ensure(p.backupKey())
	if err != nil {
		return err
	}
	cf, err := clusterFile(s, p, recipient)
	if err != nil {
		return err
	}
	_, err = fsutil.EnsureFile(p.clusterFile(), cf, 0o600, 0o700)
	return err
}

// waitAll waits for machines in parallel and reports each as it comes up.
func (m *Manager) waitAll(ctx context.Context, s *state, p paths, machines []*machineState) error {
	var wg sync.WaitGroup
	errs := make([]error, len(machines))
	start := time.Now()
	for i, ms := range machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = m.waitReady(ctx, s, p, ms); errs[i] == nil {
				say(m.progress, "lab %s: %s up at %s (%s)", s.Name, ms.Name, ms.Address, time.Since(start).Round(100*time.Millisecond))
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Status reports the named lab.
func (m *Manager) Status(ctx context.Context, name string) (*Status, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	p := m.paths(name)
	s, err := loadState(p)
	if err != nil {
		if errors.Is(err, ErrNoLab) {
			return nil, fmt.Errorf("lab %s: %w", name, ErrNoLab)
		}
		return nil, err
	}
	return m.status(s, p), nil
}

func (m *Manager) status(s *state, p paths) *Status {
	st := &Status{
		Name: s.Name, Subnet: s.Subnet, Gateway: s.gateway(), VIP: s.vip(),
		Bridge: s.Bridge, ClusterFile: p.clusterFile(), SSHKey: p.key(), BackupKey: p.backupKey(), KnownHosts: p.knownHosts(),
		SSHUser: "root", SudoUser: SudoUser, Base: s.Base, Dir: p.dir,
	}
	for _, ms := range s.Machines {
		mc := Machine{Name: ms.Name, Role: ms.Role, Address: ms.Address, State: Stopped, Link: linkState(ms.Veth), Interface: ms.Veth}
		if key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ms.HostKey)); err == nil {
			mc.HostKey = sshx.Fingerprint(key)
		}
		if ms.running() {
			mc.State, mc.PID = Running, ms.PID
			mc.Memory = pss(machinePIDs(s.Name, ms.Name))
		}
		st.Machines = append(st.Machines, mc)
	}
	return st
}

// List reports every lab with a state directory.
func (m *Manager) List(ctx context.Context) ([]Status, error) {
	ents, err := os.ReadDir(m.stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list labs: %w", err)
	}
	var out []Status
	for _, e := range ents {
		if !e.IsDir() || ValidateName(e.Name()) != nil {
			continue
		}
		p := m.paths(e.Name())
		s, err := loadState(p)
		if err != nil {
			continue // half-made: down still finds it
		}
		out = append(out, *m.status(s, p))
	}
	return out, nil
}

// machine finds a machine's lab by its name and loads it.
func (m *Manager) machine(name string) (*state, paths, *machineState, error) {
	lab, _, _, err := SplitMachineName(name)
	if err != nil {
		return nil, paths{}, nil, err
	}
	p := m.paths(lab)
	s, err := loadState(p)
	if err != nil {
		return nil, paths{}, nil, fmt.Errorf("machine %s: lab %s: %w", name, lab, err)
	}
	ms, ok := s.machine(name)
	if !ok {
		return nil, paths{}, nil, fmt.Errorf("lab %s has no machine %s", lab, name)
	}
	return s, p, ms, nil
}

// locked runs fn on a machine with its lab locked and saves the state.
func (m *Manager) locked(ctx context.Context, machine string, fn func(*state, paths, *machineState) error) error {
	lab, _, _, err := SplitMachineName(machine)
	if err != nil {
		return err
	}
	lock, err := lockFile(ctx, m.paths(lab).lock(), nil)
	if err != nil {
		return err
	}
	defer lock.unlock()
	s, p, ms, err := m.machine(machine)
	if err != nil {
		return err
	}
	if err := fn(s, p, ms); err != nil {
		return err
	}
	return saveState(p, s)
}

// Stop powers a machine off: gracefully (systemd shuts down, like pressing
// the power button) unless force, which kills it at once, like pulling the
// plug. Its tree, address and host key stay for Start. Stopping a stopped
// machine does nothing.
func (m *Manager) Stop(ctx context.Context, machine string, force bool) error {
	return m.locked(ctx, machine, func(s *state, _ paths, ms *machineState) error {
		return m.halt(ctx, s.Name, ms, !force)
	})
}

// Start boots a stopped machine again, on the same tree, address and host
// key, and waits until it is ready. Starting a running machine does nothing.
func (m *Manager) Start(ctx context.Context, machine string) error {
	return m.locked(ctx, machine, func(s *state, p paths, ms *machineState) error {
		if ms.running() {
			return nil
		}
		if err := CheckPrerequisites(ctx, m.install, m.progress); err != nil {
			return err
		}
		br, err := ensureBridge(s.Name, s.Subnet)
		if err != nil {
			return err
		}
		if err := m.boot(ctx, s, p, br, ms); err != nil {
			return err
		}
		if err := saveState(p, s); err != nil {
			return err
		}
		return m.waitReady(ctx, s, p, ms)
	})
}

// Cut takes a machine's link down at the bridge, as if its cable were
// pulled: it keeps running but reaches nothing and nothing reaches it.
func (m *Manager) Cut(ctx context.Context, machine string) error {
	return m.setLink(ctx, machine, false)
}

// Heal brings a cut link back.
func (m *Manager) Heal(ctx context.Context, machine string) error {
	return m.setLink(ctx, machine, true)
}

func (m *Manager) setLink(ctx context.Context, machine string, up bool) error {
	return m.locked(ctx, machine, func(_ *state, _ paths, ms *machineState) error {
		if !ms.running() {
			return fmt.Errorf("%s is stopped: it has no link to cut or heal", ms.Name)
		}
		return setLink(ms.Veth, up)
	})
}

// SSHConfig is how to reach a machine as user ("" is root), with the lab's
// key and strict host key checking against its known_hosts.
func (m *Manager) SSHConfig(machine, user string) (sshx.Config, error) {
	_, p, ms, err := m.machine(machine)
	if err != nil {
		return sshx.Config{}, err
	}
	return m.sshConfig(p, ms, user), nil
}

// ErrStopped means the machine is powered off.
var ErrStopped = errors.New("machine is stopped")

// Dial connects to a machine over SSH as user ("" is root). A stopped
// machine fails at once with ErrStopped rather than after a connect
// timeout; tests of what clients see when a host vanishes dial its address
// themselves (SSHConfig).
func (m *Manager) Dial(ctx context.Context, machine, user string) (*sshx.Client, error) {
	_, p, ms, err := m.machine(machine)
	if err != nil {
		return nil, err
	}
	if !ms.running() {
		return nil, fmt.Errorf("%s: %w (start it with `anvil lab start %s`)", machine, ErrStopped, machine)
	}
	return sshx.Dial(ctx, m.sshConfig(p, ms, user))
}
