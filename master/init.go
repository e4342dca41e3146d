package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/phase"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/layout"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
)

// ClusterFile is where init keeps the cluster file it ran with, so later
// commands (phases run one at a time, join, status, backup) see the same one.
const ClusterFile = hostfs.AnvilConfDir + "/cluster.yaml"

// NodeStateFile records what init or join made of this machine; a second
// init refuses without --force, and status, reset and backup read it.
const NodeStateFile = hostfs.AnvilConfDir + "/node.json"

// NodeState is the content of NodeStateFile.
type NodeState struct {
	Node              string          `json:"node"`
	Role              v1alpha1.Role   `json:"role"`
	Layout            v1alpha1.Layout `json:"layout"`
	KubernetesVersion string          `json:"kubernetesVersion"`
	// UpgradingTo is the version an upgrade (or a rollback) began to
	// switch this machine to and has not finished: some components may
	// run it, the others KubernetesVersion.
	UpgradingTo string `json:"upgradingTo,omitempty"`
	// Root is the runtime root the components were laid out under.
	Root        string    `json:"root,omitempty"`
	Initialized time.Time `json:"initialized"`
}

// ReadNodeState reads NodeStateFile under root.
func ReadNodeState(root hostfs.Root) (*NodeState, error) {
	p := root.Path(NodeStateFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var st NodeState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return &st, nil
}

// WriteNodeState writes NodeStateFile under root.
func WriteNodeState(root hostfs.Root, st NodeState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(root.Path(NodeStateFile), append(b, '\n'), 0o600, 0o700)
}

// InitOptions are the inputs of `anvil init`.
type InitOptions struct {
	// Cluster is the cluster file (loaded, defaulted, validated) and Node
	// this machine's host in it.
	Cluster *v1alpha1.Cluster
	Node    string
	// AdvertiseAddress overrides the node's address from the file.
	AdvertiseAddress netip.Addr
	Layout           v1alpha1.Layout
	// Root prefixes every host path (tests, packaging).
	Root hostfs.Root
	// Anvil is this anvil binary (os.Executable()); the process layout runs
	// etcd and the supervisor from it.
	Anvil string
	// Force re-runs init on an initialised machine.
	Force bool
	// TokenTTL is the bootstrap token's lifetime (24h when zero, at most
	// MaxTokenTTL).
	TokenTTL time.Duration
	// Timeout bounds the wait for the control plane to become ready.
	Timeout time.Duration
	// UploadCerts seals the shared secrets in the cluster so that more
	// masters can join during the next hour (prints the certificate key).
	UploadCerts bool
	// Log is for details; Task is what the person at the terminal sees.
	Log  *slog.Logger
	Task *progress.Task
}

type initPhase = phase.Phase[*initRun]

// initPhases is the init flow, top to bottom. Each phase can run alone
// (`anvil init phase NAME`), deriving what it needs from the options and
// what earlier phases left on disk.
func initPhases() []initPhase {
	return []initPhase{
		{Name: "preflight", Description: "check that this machine can run a control plane", Run: preflightPhase},
		{Name: "certs", Description: "make the cluster CAs and this master's certificates", Mutates: true, Run: certsPhase},
		{Name: "kubeconfig", Description: "write the admin, super-admin (first master only), controller-manager and scheduler kubeconfigs", Mutates: true, Run: kubeconfigPhase},
		{Name: "config", Description: "write the cluster file, component configs and the layout's units, manifests or specs", Mutates: true, Run: configPhase},
		{Name: "kubelet", Description: kubeletPhaseHelp, Mutates: true, Run: kubeletPhase},
		{Name: "etcd", Description: "start the embedded etcd member", Mutates: true, Run: etcdPhase},
		{Name: "control-plane", Description: "start kube-apiserver, kube-controller-manager, kube-scheduler (and the VIP manager)", Mutates: true, Run: controlPlanePhase},
		{Name: "wait", Description: "wait for /readyz, both /healthz and both leader leases", Run: waitPhase},
		{Name: "bootstrap", Description: "create RBAC, a bootstrap token, cluster-info, the anvil ConfigMap and the node settings", Mutates: true, Run: bootstrapPhase},
		{Name: "node", Description: nodePhaseHelp, Mutates: true, Run: nodePhase},
		{Name: "agent", Description: agentPhaseHelp, Mutates: true, Run: agentPhase},
		{Name: "mark-control-plane", Description: markPhaseHelp, Mutates: true, Run: markControlPlanePhase},
		{Name: "upload-certs", Description: "with --upload-certs: seal the shared CAs and keys in the cluster for an hour, for joining masters", Mutates: true, Run: uploadCertsPhase},
		{Name: "finish", Description: "mark the machine initialised and print how to use and join the cluster", Mutates: true, Run: finishPhase},
	}
}

// InitPhaseNames lists the init phases, in order.
func InitPhaseNames() []string { return phase.Names(initPhases()) }

// InitPhaseHelp describes the init phases, one line each, for --help.
func InitPhaseHelp() string { return phase.Help(initPhases()) }

// InitResult is what init leaves for the person who ran it.
type InitResult struct {
	Endpoint        string
	AdminKubeconfig string
	CAHash          pki.CAHash
	// Token is the bootstrap token made by the bootstrap phase.
	Token pki.Token
	// CertificateKey decrypts the uploaded certificates (upload-certs).
	CertificateKey *CertificateKey
	Layout         v1alpha1.Layout
	// Elapsed is the time from the first phase to the end of the last.
	Elapsed time.Duration
	// Ready is when the wait phase saw everything ready.
	Ready time.Duration
}

// initRun is the state one run of init carries from phase to phase.
type initRun struct {
	o      InitOptions
	plan   Plan
	pkiCfg pki.Config
	// cp runs the components; it is made with the plan.
	cp      *ControlPlane
	log     *slog.Logger
	started time.Time
	// startedHere lists what this run started, so a failure stops it again.
	startedHere []component.Spec
	// nodeStarted is the node stack (containerd, the kubelet) when this
	// run installed it; it runs in node.StackLayout.
	nodeStarted []component.Spec
	createdData bool
	result      InitResult
	// only is the phase when a single one runs.
	only string
	// join is set for a control-plane join.
	join *joinState
}

// ErrAlreadyInitialized means init ran here before.
var ErrAlreadyInitialized = errors.New("this machine is already an initialised master")

// Init runs every phase in order; on failure it stops what it started.
func Init(ctx context.Context, o InitOptions) (*InitResult, error) {
	return RunInitPhases(ctx, o, nil)
}

// RunInitPhases runs the named phases (all when names is empty) in the
// order of the init flow.
func RunInitPhases(ctx context.Context, o InitOptions, names []string) (res *InitResult, err error) {
	r, err := newInitRun(o)
	if err != nil {
		return nil, err
	}
	if len(names) == 1 {
		r.only = names[0]
	}
	defer func() {
		if err != nil {
			r.rollback(err)
		}
	}()
	if err := phase.Run(ctx, initPhases(), r, phase.Options{Command: "init", Only: names, Task: o.Task}); err != nil {
		return nil, err
	}
	r.result.Elapsed = time.Since(r.started)
	return &r.result, nil
}

func newInitRun(o InitOptions) (*initRun, error) {
	if o.Cluster == nil {
		return nil, errors.New("init: no cluster")
	}
	r := newRun(o)
	// The token is made after the control plane started: a lifetime it
	// cannot have is better refused before.
	if err := CheckTokenTTL(r.o.TokenTTL); err != nil {
		return nil, fmt.Errorf("init: the join token: %w", err)
	}
	if err := r.setCluster(o.Cluster); err != nil {
		return nil, err
	}
	return r, nil
}

// newRun is the state of an init or a control-plane join before the
// cluster file is known (a join learns it from the cluster).
func newRun(o InitOptions) *initRun {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = 24 * time.Hour
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	return &initRun{o: o, log: o.Log.With("node", o.Node), started: time.Now()}
}

// setCluster fixes the cluster file the run works from, and so the plan of
// this master and its certificates.
func (r *initRun) setCluster(c *v1alpha1.Cluster) error {
	o := &r.o
	o.Cluster = c
	if o.Layout == "" {
		o.Layout = c.ControlPlane.Layout
	}
	h, ok := c.Host(o.Node)
	if !ok {
		return fmt.Errorf("node %q is not in the cluster file", o.Node)
	}
	if !h.IsMaster() {
		return fmt.Errorf("node %q is a %s: run anvil join on it, not init", o.Node, h.Role)
	}
	p := Plan{Cluster: c, Node: h, AdvertiseAddress: o.AdvertiseAddress, Etcd: r.plan.Etcd}
	if o.Layout == v1alpha1.LayoutProcess {
		// Only the process layout runs things under the root itself.
		p.Root, p.AnvilBinary = o.Root, o.Anvil
	}
	p, err := p.Complete()
	if err != nil {
		return err
	}
	cfg, err := pki.ConfigFromCluster(c, o.Node)
	if err != nil {
		return err
	}
	if o.AdvertiseAddress.IsValid() && !slices.Contains(cfg.NodeIPs, o.AdvertiseAddress) {
		cfg.NodeIPs = append(cfg.NodeIPs, o.AdvertiseAddress)
	}
	r.plan, r.pkiCfg = p, cfg
	r.cp = &ControlPlane{Plan: p, Layout: o.Layout, Root: o.Root, Anvil: o.Anvil, Log: r.log, Task: o.Task}
	r.result.Endpoint = c.APIServerURL()
	r.result.AdminKubeconfig = o.Root.Kubeconfig(pki.AdminKubeconfig)
	r.result.Layout = o.Layout
	return nil
}

func certsPhase(ctx context.Context, r *initRun) error {
	res, err := pki.Ensure(r.o.Root.PKI(), r.pkiCfg, pki.Options{Force: r.o.Force})
	if err != nil {
		return err
	}
	r.reportPKI("certs", res)
	return nil
}

func kubeconfigPhase(ctx context.Context, r *initRun) error {
	// super-admin.conf (system:masters, past RBAC) only on the first
	// master, which needs it to make the RBAC that admin.conf relies on.
	res, err := pki.Ensure(r.o.Root.PKI(), r.pkiCfg, pki.Options{KubeconfigDir: r.o.Root.Kubernetes(), Force: r.o.Force, SuperAdmin: r.join == nil})
	if err != nil {
		return err
	}
	r.reportPKI("kubeconfig", res)
	return nil
}

func (r *initRun) reportPKI(phase string, res []pki.Result) {
	counts := map[pki.Action]int{}
	for _, x := range res {
		counts[x.Action]++
		if x.Action == pki.Reissued || x.Action == pki.Replaced {
			r.o.Task.Say("%s %s: %s", x.Action, x.Name, x.Reason)
		}
	}
	r.log.Debug("pki", "phase", phase, "created", counts[pki.Created], "kept", counts[pki.Kept], "reissued", counts[pki.Reissued])
}

// configPhase writes the cluster file, every control-plane config file and
// the systemd units or static pods; process specs are written by the phases
// that start them, since writing one is what makes the supervisor run it.
func configPhase(ctx context.Context, r *initRun) error {
	b, err := yaml.Marshal(r.o.Cluster)
	if err != nil {
		return err
	}
	if _, err := fsutil.EnsureFile(r.o.Root.Path(ClusterFile), b, 0o600, 0o700); err != nil {
		return err
	}
	files, err := r.renderedFiles()
	if err != nil {
		return err
	}
	var keep []component.OutputFile
	for _, f := range files {
		if !strings.HasPrefix(f.Path, component.ProcessSpecDir+"/") {
			keep = append(keep, f)
		}
	}
	if fi, err := os.Stat(r.o.Root.EtcdData()); err != nil || fi.Size() == 0 {
		r.createdData = true
	}
	_, err = component.WriteTree(r.o.Root, keep)
	return err
}

// renderedFiles is the control plane's whole tree for the layout (the node
// agent is installed by join and by the agent phase, not here).
func (r *initRun) renderedFiles() ([]component.OutputFile, error) {
	cs, err := Components(r.plan)
	if err != nil {
		return nil, err
	}
	var out []component.OutputFile
	switch r.o.Layout {
	case v1alpha1.LayoutSystemd:
		out, err = component.Units(cs)
	case v1alpha1.LayoutStaticPod:
		out, err = component.StaticPods(cs)
	case v1alpha1.LayoutProcess:
		out, err = component.Processes(cs, ProcessOptions(r.plan))
	default:
		return nil, fmt.Errorf("unknown layout %q: use one of %v", r.o.Layout, v1alpha1.Layouts())
	}
	if err != nil {
		return nil, err
	}
	read := func(hostPath string) ([]byte, error) { return os.ReadFile(r.o.Root.Path(hostPath)) }
	files, err := ConfigFiles(r.plan, read)
	if err != nil {
		return nil, err
	}
	return append(out, files...), nil
}

// start has the layout run cs, and remembers them so a failed run stops
// them again.
func (r *initRun) start(ctx context.Context, cs []component.Spec) error {
	if err := r.cp.Start(ctx, cs); err != nil {
		return err
	}
	r.startedHere = append(r.startedHere, cs...)
	return nil
}

func etcdPhase(ctx context.Context, r *initRun) error {
	cs, err := r.cp.Components(Etcd)
	if err != nil {
		return err
	}
	if err := r.start(ctx, cs); err != nil {
		return err
	}
	if r.only == "etcd" {
		// Run alone, the phase is done when etcd serves; in the whole
		// flow the wait phase waits for it, so the apiserver's start-up
		// overlaps etcd's first election.
		return r.cp.WaitReady(ctx, cs, r.o.Timeout)
	}
	return nil
}

func controlPlanePhase(ctx context.Context, r *initRun) error {
	all, err := Components(r.plan)
	if err != nil {
		return err
	}
	// Everything after etcd: the apiserver, controller-manager, scheduler,
	// and the VIP manager when the cluster has a VIP.
	cs := slices.DeleteFunc(all, func(c component.Spec) bool { return c.Name == Etcd })
	return r.start(ctx, cs)
}

func waitPhase(ctx context.Context, r *initRun) error {
	cs, err := r.cp.Components()
	if err != nil {
		return err
	}
	if err := r.cp.WaitReady(ctx, cs, r.o.Timeout); err != nil {
		return err
	}
	if err := r.cp.WaitLeaders(ctx, r.o.Timeout); err != nil {
		return err
	}
	r.result.Ready = time.Since(r.started)
	r.o.Task.Say("control plane ready after %s", r.result.Ready.Round(10*time.Millisecond))
	return nil
}

func bootstrapPhase(ctx context.Context, r *initRun) error {
	cli, err := r.cp.Client(pki.SuperAdminKubeconfig)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(r.o.Root.PKI(), pki.CertFile(pki.CACertAndKeyBaseName)))
	if err != nil {
		return err
	}
	tok, err := pki.GenerateToken()
	if err != nil {
		return err
	}
	nodeConfig := node.ClusterConfigOf(r.o.Cluster)
	upstreams := LocalUpstreams()
	if len(upstreams) == 0 && r.runsPods() {
		r.o.Task.Warn("%s has no resolver in %s: cluster DNS will answer the cluster's names only, forwarding nothing else", r.o.Node, node.ReadFacts("").ResolvConf)
	}
	dead := node.ProbeResolvers(ctx, upstreams, 2*time.Second)
	for _, u := range upstreams {
		if err, ok := dead[u]; ok {
			r.o.Task.Warn("resolver %s (in %s on %s) does not answer DNS: %v; cluster DNS forwards names outside the cluster to it, so they will not resolve in pods until it does",
				u, node.ReadFacts("").ResolvConf, r.o.Node, err)
		}
	}
	signing, err := pki.ReadBackupSigningPublicKey(r.o.Root.PKI())
	if err != nil {
		return err
	}
	signingKey := envelope.FormatSigningKey(signing)
	if pin := r.o.Cluster.Backup.SigningPublicKey; pin != "" && pin != signingKey {
		return fmt.Errorf("the backup signing key in %s is %s, and the cluster file pins %s in backup.signingPublicKey: "+
			"put the cluster's key there (anvil backup export-files does), or pin this one", r.o.Root.PKI(), signingKey, pin)
	}
	err = EnsureBootstrapObjects(ctx, cli, BootstrapInput{
		BackupSigningKey: signingKey,
		Upstreams:        upstreams,
		CACert:           caPEM,
		APIServerURL:     r.o.Cluster.APIServerURL(),
		Token:            BootstrapToken{ID: tok.ID(), Secret: tok.Secret(), TTL: r.o.TokenTTL, Description: "made by anvil init"},
		Cluster:          r.o.Cluster,
		NodeConfig:       &nodeConfig,
	})
	if err != nil {
		return err
	}
	hash, err := pki.CAHashFromFile(filepath.Join(r.o.Root.PKI(), pki.CertFile(pki.CACertAndKeyBaseName)))
	if err != nil {
		return err
	}
	r.result.Token, r.result.CAHash = tok, hash
	return nil
}

func uploadCertsPhase(ctx context.Context, r *initRun) error {
	if !r.o.UploadCerts && r.only != "upload-certs" {
		return nil
	}
	cs, err := r.cp.Client(pki.AdminKubeconfig)
	if err != nil {
		return err
	}
	key, err := NewCertificateKey()
	if err != nil {
		return err
	}
	now := time.Now() // one clock for the sealed certificates and their token
	if err := UploadCerts(ctx, cs, r.o.Root, key, now); err != nil {
		return err
	}
	r.result.CertificateKey = &key
	if r.result.CAHash, err = pki.CAHashFromFile(filepath.Join(r.o.Root.PKI(), pki.CertFile(pki.CACertAndKeyBaseName))); err != nil {
		return err
	}
	if r.result.Token.IsZero() {
		// Run alone: a token to go with the key, as short-lived.
		if r.result.Token, err = CreateToken(ctx, cs, TokenOptions{TTL: CertsTTL, Description: "control-plane join"}, now); err != nil {
			return err
		}
	}
	return nil
}

func finishPhase(ctx context.Context, r *initRun) error {
	if r.result.CAHash.IsZero() {
		hash, err := pki.CAHashFromFile(filepath.Join(r.o.Root.PKI(), pki.CertFile(pki.CACertAndKeyBaseName)))
		if err != nil {
			return err
		}
		r.result.CAHash = hash
	}
	for _, ensure := range []func(context.Context, Plan, v1alpha1.Layout, hostfs.Root) (ScheduleResult, error){EnsureBackupSchedule, EnsureRenewSchedule} {
		sched, err := ensure(ctx, r.plan, r.o.Layout, r.o.Root)
		if err != nil {
			return err
		}
		if sched.Note != "" {
			r.o.Task.Say("%s", sched.Note)
		}
	}
	return WriteNodeState(r.o.Root, NodeState{
		Node: r.o.Node, Role: v1alpha1.RoleMaster, Layout: r.o.Layout, KubernetesVersion: r.plan.KubernetesVersion,
		Root: string(r.o.Root), Initialized: time.Now().UTC().Truncate(time.Second),
	})
}

// rollback stops what this run started, so a failed init leaves no
// process behind, and removes etcd data it created, so the next run starts
// clean. Certificates and configs are kept: the next run reuses them.
func (r *initRun) rollback(cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if len(r.startedHere) > 0 {
		r.o.Task.Start("rollback", "stopping what this run started: "+cause.Error())
	}
	if r.join != nil {
		defer r.join.withdrawLearner(ctx, r)
	}
	if len(r.nodeStarted) > 0 {
		lo := r.cp.LayoutOptions()
		lo.Layout = node.StackLayout(lo.Layout)
		if err := layout.Stop(ctx, lo, r.nodeStarted, false); err != nil {
			r.log.Error("rollback: stop the node stack failed", "err", err)
		}
	}
	if len(r.startedHere) == 0 {
		if r.createdData {
			os.RemoveAll(r.o.Root.EtcdData())
		}
		return
	}
	all := r.o.Layout == v1alpha1.LayoutProcess
	if err := layout.Stop(ctx, r.cp.LayoutOptions(), r.startedHere, all); err != nil {
		r.log.Error("rollback: stop failed", "err", err)
	}
	if r.o.Layout == v1alpha1.LayoutProcess {
		specs, _ := filepath.Glob(filepath.Join(r.o.Root.Path(component.ProcessSpecDir), "*.json"))
		for _, s := range specs {
			os.Remove(s)
		}
	}
	if r.createdData {
		os.RemoveAll(r.o.Root.EtcdData())
	}
}
