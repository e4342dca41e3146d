package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/backoff"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/phase"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/node"
	"anvil.dev/anvil/pki"
)

// JoinOptions are the inputs of `anvil join` for a worker.
type JoinOptions struct {
	// Endpoint is the apiserver to discover the cluster from,
	// https://host:port.
	Endpoint string
	Token    pki.Token
	CAHash   pki.CAHash
	NodeName string
	// NodeIP is the InternalIP to report; unset means the default route's.
	NodeIP netip.Addr
	Labels map[string]string
	Taints []v1alpha1.Taint
	// Servers are more apiservers the agent may fail over to (the other
	// masters of a cluster file); the endpoint and the server cluster-info
	// names always come first.
	Servers []string
	Root    hostfs.Root
	Layout  v1alpha1.Layout
	// Anvil is the binary the agent runs from (see InstallOptions.Anvil).
	Anvil             string
	KubernetesVersion string
	// Runtime is containerd when this machine runs pods: join then reads
	// the cluster's node settings, gets the kubelet its own certificate
	// and starts containerd and the kubelet (package node), and the
	// kubelet registers the Node. none keeps the agent's own Node. Empty
	// means none.
	Runtime v1alpha1.Runtime
	// Force replaces the credentials of another cluster left by an
	// earlier join.
	Force bool
	// DryRun runs what only reads (preflight, discovery, the node
	// settings) and records what the other phases would do in
	// JoinResult.Plan.
	DryRun bool
	// DiscoveryTimeout, CSRTimeout and ReadyTimeout bound the waits for an
	// apiserver, for the signed certificate and for the Node to be Ready.
	DiscoveryTimeout time.Duration
	CSRTimeout       time.Duration
	ReadyTimeout     time.Duration
	Log              *slog.Logger
	// Task tells the person at the terminal what is happening.
	Task *progress.Task
}

type joinPhase = phase.Phase[*joinRun]

// joinPhases is the worker join, top to bottom; node-config and node are
// there only when the machine runs pods (runtime containerd). Nothing is
// written on the machine before the kubeconfig phase: a wrong token, a
// wrong CA hash, masters without the node settings or a refused CSR leave
// it as it was.
func joinPhases(rt v1alpha1.Runtime) []joinPhase {
	pods := rt == v1alpha1.RuntimeContainerd
	return slices.DeleteFunc([]joinPhase{
		{Name: "preflight", Description: "check the inputs and what an earlier join left here", Run: joinPreflight},
		{Name: "discovery", Description: "read cluster-info trusting nothing; check its signature with the token and its CA against the pin", Run: joinDiscovery},
		{Name: "node-config", Description: "runtime containerd: read the cluster's node settings (ConfigMap kube-system/anvil-node-config) from the verified apiserver", Run: joinNodeConfig},
		{Name: "tls-bootstrap", Description: "get the node's client certificates, the agent's and (runtime containerd) the kubelet's, through CSRs sent with the token; the keys stay here", Mutates: true, Run: joinTLSBootstrap, Plan: planTLSBootstrap},
		{Name: "kubeconfig", Description: "write the agent's kubeconfig (0600) and forget the token", Mutates: true, Run: joinKubeconfig, Plan: planKubeconfig},
		{Name: "node", Description: "runtime containerd: write containerd's and the kubelet's configs and credentials, import the images, start both", Mutates: true, Run: joinNode, Plan: planNode},
		{Name: "agent", Description: "write agent.yaml and start anvil-agent", Mutates: true, Run: joinAgent, Plan: planAgent},
		{Name: "wait", Description: "wait for the Node to be registered (by the kubelet, or by the agent with runtime none) and Ready", Run: joinWait},
	}, func(p joinPhase) bool { return !pods && (p.Name == "node-config" || p.Name == "node") })
}

// JoinPhaseNames lists the worker join's phases for a runtime, in order.
func JoinPhaseNames(rt v1alpha1.Runtime) []string { return phase.Names(joinPhases(rt)) }

// JoinPhaseHelp describes every phase of the worker join for --help.
func JoinPhaseHelp() string { return phase.Help(joinPhases(v1alpha1.RuntimeContainerd)) }

// JoinResult is what a join did.
type JoinResult struct {
	NodeName   string
	Kubeconfig string
	ConfigFile string
	Servers    []string
	// AlreadyJoined is true when an earlier join's credentials were kept.
	AlreadyJoined bool
	// Runtime is what runs this machine's pods.
	Runtime v1alpha1.Runtime
	// Plan is, in a dry run, what the phases that change something would
	// do, one line each, prefixed with the phase.
	Plan    []string
	Elapsed time.Duration
}

// joinRun carries one join from phase to phase.
type joinRun struct {
	o       JoinOptions
	log     *slog.Logger
	started time.Time
	// token is dropped once the node has its own certificate.
	token   pki.Token
	info    *ClusterInfo
	creds   Credentials
	servers []string
	kcPath  string
	joined  bool
	result  JoinResult
	// node is what the node phase installs (runtime containerd), from the
	// node-config phase.
	node *nodeSetup
}

// Join runs every join phase in order.
func Join(ctx context.Context, o JoinOptions) (*JoinResult, error) {
	j, err := newJoinRun(o)
	if err != nil {
		return nil, err
	}
	if err := phase.Run(ctx, joinPhases(j.o.Runtime), j, phase.Options{Command: "join", Task: o.Task, DryRun: o.DryRun}); err != nil {
		return nil, err
	}
	j.result.NodeName, j.result.Servers, j.result.AlreadyJoined, j.result.Runtime = j.o.NodeName, j.servers, j.joined, j.o.Runtime
	j.result.Elapsed = time.Since(j.started)
	return &j.result, nil
}

func newJoinRun(o JoinOptions) (*joinRun, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Layout == "" {
		o.Layout = v1alpha1.LayoutSystemd
	}
	// A worker of a static-pod cluster runs no control plane: its node
	// stack and agent are units, as on its masters.
	o.Layout = node.StackLayout(o.Layout)
	if o.CSRTimeout == 0 {
		o.CSRTimeout = 2 * time.Minute
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	if o.Runtime == "" {
		o.Runtime = v1alpha1.RuntimeNone
	}
	if !slices.Contains(v1alpha1.Runtimes(), o.Runtime) {
		return nil, fmt.Errorf("runtime %q is not one of %v", o.Runtime, v1alpha1.Runtimes())
	}
	j := &joinRun{o: o, log: o.Log.With("node", o.NodeName), started: time.Now(), token: o.Token}
	return j, nil
}

// kubeconfigPath is where the agent's kubeconfig is written from here.
func (j *joinRun) kubeconfigPath() string { return j.o.Root.Path(KubeconfigFile) }

func joinPreflight(ctx context.Context, j *joinRun) error {
	o := j.o
	var errs []string
	if o.NodeName == "" {
		errs = append(errs, "no node name (--node-name)")
	} else if msgs := validation.IsDNS1123Subdomain(o.NodeName); len(msgs) > 0 {
		errs = append(errs, fmt.Sprintf("node name %q: %s", o.NodeName, strings.Join(msgs, "; ")))
	}
	if _, err := ParseEndpoint(o.Endpoint); err != nil {
		errs = append(errs, err.Error())
	}
	if o.Token.IsZero() {
		errs = append(errs, "no bootstrap token (--token or --token-file)")
	}
	if o.CAHash.IsZero() {
		errs = append(errs, "no CA hash (--ca-cert-hash sha256:…; `anvil certs ca-hash` prints it on a master)")
	}
	if _, err := runtimeRootOf(o.Root, o.Layout); err != nil {
		errs = append(errs, err.Error())
	}
	if o.Layout == v1alpha1.LayoutSystemd && o.Anvil == "" {
		bin := o.Root.Path(hostfs.LinkDir + "/anvil")
		if _, err := os.Stat(bin); err != nil {
			errs = append(errs, fmt.Sprintf("the anvil-agent unit runs %s, which is missing (install anvil there first)", bin))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	j.kcPath = j.kubeconfigPath()

	// An earlier join's kubeconfig: keep it if it is this node's in the
	// pinned cluster, refuse to overwrite another cluster's without
	// --force.
	creds, err := ReadKubeconfig(j.kcPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil && !o.Force:
		return fmt.Errorf("%w; remove it or pass --force", err)
	case err != nil:
		return nil
	}
	why := credentialsMismatch(creds, o.CAHash, o.NodeName, time.Now())
	switch {
	case why == "":
		j.creds, j.joined = creds, true
		j.o.Task.Say("already joined: keeping %s", j.kcPath)
		return nil
	case !o.Force:
		return fmt.Errorf("%s exists and %s; run `anvil reset` first or pass --force", j.kcPath, why)
	}
	j.o.Task.Say("replacing %s (%s)", j.kcPath, why)
	return nil
}

// credentialsMismatch says why creds are not a valid node credential of
// the pinned cluster for nodeName, or "" when they are.
func credentialsMismatch(creds Credentials, pin pki.CAHash, nodeName string, now time.Time) string {
	cas, err := pki.ParseCerts(creds.CAPEM)
	if err != nil || !slices.ContainsFunc(cas, pin.Matches) {
		return "it trusts another cluster's CA"
	}
	tc, err := creds.cert()
	if err != nil {
		return "its client certificate does not parse"
	}
	if tc.Leaf.Subject.CommonName != NodeUser(nodeName) {
		return fmt.Sprintf("it belongs to %s, not %s", tc.Leaf.Subject.CommonName, NodeUser(nodeName))
	}
	if now.After(tc.Leaf.NotAfter) {
		return "its client certificate expired on " + tc.Leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	return ""
}

func joinDiscovery(ctx context.Context, j *joinRun) error {
	endpoint, _ := ParseEndpoint(j.o.Endpoint)
	if j.joined {
		j.servers = uniqueServers(append([]string{endpoint, j.creds.Server}, j.o.Servers...))
		return nil
	}
	info, err := Discover(ctx, DiscoveryOptions{
		Endpoint: endpoint, Token: j.token, CAHash: j.o.CAHash, Timeout: j.o.DiscoveryTimeout, Log: j.log,
	})
	if err != nil {
		return err
	}
	j.info = info
	j.servers = info.Servers(j.o.Servers...)
	j.o.Task.Say("cluster CA %s verified; apiservers %s", pki.CAHashOf(info.CA), strings.Join(j.servers, ", "))
	return nil
}

func joinTLSBootstrap(ctx context.Context, j *joinRun) error {
	if j.joined {
		return j.kubeletCertificateFromNode(ctx)
	}
	cli, err := j.bootstrapClient()
	if err != nil {
		return err
	}
	defer cli.close()
	certPEM, keyPEM, err := requestKeyAndCertificate(ctx, cli, j.o.NodeName, j.o.CSRTimeout, j.log)
	if err != nil {
		return err
	}
	j.creds = Credentials{Server: j.servers[0], CAPEM: j.info.CAPEM, CertPEM: certPEM, KeyPEM: keyPEM}
	j.o.Task.Say("client certificate for %s issued", NodeUser(j.o.NodeName))
	if j.node == nil {
		return nil
	}
	// The kubelet is system:node:NAME too, with a key of its own: it
	// rotates its certificate itself, the agent rotates the agent's.
	certPEM, keyPEM, err = requestKeyAndCertificate(ctx, cli, j.o.NodeName, j.o.CSRTimeout, j.log)
	if err != nil {
		return fmt.Errorf("the kubelet's certificate: %w", err)
	}
	j.node.kubelet = node.KubeletCredentials{Server: j.creds.Server, CAPEM: j.creds.CAPEM, CertPEM: certPEM, KeyPEM: keyPEM}
	j.node.kubeletHasCredentials = true
	j.o.Task.Say("kubelet client certificate for %s issued", NodeUser(j.o.NodeName))
	return nil
}

func planTLSBootstrap(ctx context.Context, j *joinRun) error {
	switch {
	case j.joined && j.node != nil && !j.node.kubeletHasCredentials:
		j.plan("tls-bootstrap", "keep the agent's certificate; request the kubelet's for %s with it (CSR)", NodeUser(j.o.NodeName))
	case j.joined:
		j.plan("tls-bootstrap", "keep the certificates issued by an earlier join")
	case j.node != nil:
		j.plan("tls-bootstrap", "request two client certificates for %s from %s with the token (CSRs): the agent's and the kubelet's", NodeUser(j.o.NodeName), j.info.Endpoint)
	default:
		j.plan("tls-bootstrap", "request the agent's client certificate for %s from %s with the token (CSR)", NodeUser(j.o.NodeName), j.info.Endpoint)
	}
	return nil
}

// bootstrapClient talks with the token, and only to the endpoint
// discovery verified.
func (j *joinRun) bootstrapClient() (*apiClient, error) {
	pool := x509.NewCertPool()
	pool.AddCert(j.info.CA)
	return newAPIClient(clientOptions{
		Servers: []string{j.info.Endpoint}, CAs: pool, Token: j.token,
		UserAgent: "anvil-join (" + j.o.NodeName + ")", Log: j.log,
	})
}

// nodeClient talks with the node's own certificate.
func (j *joinRun) nodeClient() (*apiClient, error) {
	pool, err := j.creds.caPool()
	if err != nil {
		return nil, err
	}
	tc, err := j.creds.cert()
	if err != nil {
		return nil, err
	}
	return newAPIClient(clientOptions{Servers: j.servers, CAs: pool, ClientCert: func() *tls.Certificate { return tc },
		UserAgent: "anvil-join (" + j.o.NodeName + ")", Log: j.log})
}

// requestKeyAndCertificate makes a key here and gets a node client
// certificate for it; both in PEM.
func requestKeyAndCertificate(ctx context.Context, cli *apiClient, nodeName string, wait time.Duration, log *slog.Logger) (certPEM, keyPEM []byte, err error) {
	key, err := pki.NewKey("")
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = requestNodeCertificate(ctx, cli, csrRequest{NodeName: nodeName, Key: key, Wait: wait, Log: log})
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = pki.EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

func joinKubeconfig(ctx context.Context, j *joinRun) error {
	// The token has done its work; nothing after this point can use it,
	// and it was never written anywhere.
	j.token = pki.Token{}
	if j.joined {
		return nil
	}
	return writeKubeconfig(j.kcPath, j.o.NodeName, j.creds)
}

func planKubeconfig(ctx context.Context, j *joinRun) error {
	if j.joined {
		j.plan("kubeconfig", "keep %s", j.kubeconfigPath())
		return nil
	}
	j.plan("kubeconfig", "write %s (0600) with the agent's certificate; the token is forgotten", j.kubeconfigPath())
	return nil
}

// agentConfig is the agent.yaml join writes.
func (j *joinRun) agentConfig() Config {
	cfg := Config{
		NodeName: j.o.NodeName,
		Role:     v1alpha1.RoleWorker,
		Servers:  j.servers,
		NodeIP:   j.o.NodeIP,
		Labels:   j.o.Labels,
		Taints:   j.o.Taints,
		Runtime:  j.o.Runtime,
	}
	if j.node != nil {
		cfg.Network, cfg.PodCIDR, cfg.ServiceCIDR = j.node.cc.Network, j.node.cc.PodCIDR, j.node.cc.ServiceCIDR
		cfg.BinDir = j.node.plan.BinDir
		cfg.ContainerRuntimeEndpoints = []string{node.ContainerdSocket}
	}
	return cfg
}

func joinAgent(ctx context.Context, j *joinRun) error {
	res, err := Install(ctx, InstallOptions{
		Root: j.o.Root, Layout: j.o.Layout, Anvil: j.o.Anvil, KubernetesVersion: j.o.KubernetesVersion,
		Config: j.agentConfig(), Log: j.log,
	})
	if err != nil {
		return err
	}
	j.result.Kubeconfig, j.result.ConfigFile = res.Kubeconfig, res.ConfigFile
	return nil
}

func planAgent(ctx context.Context, j *joinRun) error {
	cfg := j.agentConfig()
	what := "runtime none: the agent registers the Node and renews its Lease"
	if cfg.RunsPods() {
		what = fmt.Sprintf("runtime containerd, network %s, pod CIDR %s", cfg.Network, cfg.PodCIDR)
	}
	j.plan("agent", "write %s (%s) and start anvil-agent (layout %s)", j.o.Root.Path(ConfigFile), what, j.o.Layout)
	return nil
}

// plan records, in a dry run, what a phase would do.
func (j *joinRun) plan(phaseName, format string, args ...any) {
	line := phaseName + ": " + fmt.Sprintf(format, args...)
	j.result.Plan = append(j.result.Plan, line)
	j.o.Task.Say("would %s", fmt.Sprintf(format, args...))
}

// joinWait reads the Node with the node's own credentials until the agent
// has registered it and it is Ready.
func joinWait(ctx context.Context, j *joinRun) error {
	if j.o.DryRun {
		// Nothing was started to wait for.
		j.plan("wait", "wait up to %s for Node %s to be Ready", j.o.ReadyTimeout, j.o.NodeName)
		return nil
	}
	cli, err := j.nodeClient()
	if err != nil {
		return err
	}
	defer cli.close()
	ctx, cancel := context.WithTimeout(ctx, j.o.ReadyTimeout)
	defer cancel()
	state := "not registered"
	for {
		var n corev1.Node
		err := cli.do(ctx, "GET", nodesPath+"/"+j.o.NodeName, "", nil, &n)
		switch {
		case err == nil && serverReady(&n):
			j.o.Task.Say("node %s is Ready", j.o.NodeName)
			return nil
		case err == nil:
			state = "registered, not Ready"
		case !isNotFound(err) && ctx.Err() == nil:
			state = err.Error()
		}
		if !backoff.Sleep(ctx, 500*time.Millisecond) {
			if j.node != nil {
				return fmt.Errorf("node %s is %s after %s; the kubelet registers it (%s), the agent gives it a pod network (%s)",
					j.o.NodeName, state, j.o.ReadyTimeout, kubeletLogHint(j.o.Root, j.o.Layout), agentLogHint(j.o.Root, j.o.Layout))
			}
			return fmt.Errorf("node %s is %s after %s; see the agent's log (%s)", j.o.NodeName, state, j.o.ReadyTimeout, agentLogHint(j.o.Root, j.o.Layout))
		}
	}
}

func agentLogHint(root hostfs.Root, l v1alpha1.Layout) string {
	if l == v1alpha1.LayoutProcess {
		return root.Path(hostfs.LogDir + "/" + Name + ".log")
	}
	return "journalctl -u anvil-agent"
}

func kubeletLogHint(root hostfs.Root, l v1alpha1.Layout) string {
	if l == v1alpha1.LayoutProcess {
		return root.Path(hostfs.LogDir + "/kubelet.log")
	}
	return "journalctl -u kubelet"
}

func uniqueServers(in []string) []string {
	var out []string
	for _, s := range in {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
