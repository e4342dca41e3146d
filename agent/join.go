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
	// Force replaces the credentials of another cluster left by an
	// earlier join.
	Force bool
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

// joinPhases is the worker join, top to bottom. Nothing is written before
// the kubeconfig phase: a wrong token, a wrong CA hash or a refused CSR
// leaves the machine as it was.
func joinPhases() []joinPhase {
	return []joinPhase{
		{Name: "preflight", Description: "check the inputs and what an earlier join left here", Run: joinPreflight},
		{Name: "discovery", Description: "read cluster-info trusting nothing; check its signature with the token and its CA against the pin", Run: joinDiscovery},
		{Name: "tls-bootstrap", Description: "get the node's client certificate through a CSR sent with the token; the key stays here", Run: joinTLSBootstrap},
		{Name: "kubeconfig", Description: "write the agent's kubeconfig (0600) and forget the token", Mutates: true, Run: joinKubeconfig},
		{Name: "agent", Description: "write agent.yaml and start anvil-agent", Mutates: true, Run: joinAgent},
		{Name: "wait", Description: "wait for the Node to be registered and Ready", Run: joinWait},
	}
}

// JoinPhaseNames lists the worker join's phases, in order.
func JoinPhaseNames() []string { return phase.Names(joinPhases()) }

// JoinPhaseHelp describes the worker join's phases for --help.
func JoinPhaseHelp() string { return phase.Help(joinPhases()) }

// JoinResult is what a join did.
type JoinResult struct {
	NodeName   string
	Kubeconfig string
	ConfigFile string
	Servers    []string
	// AlreadyJoined is true when an earlier join's credentials were kept.
	AlreadyJoined bool
	Elapsed       time.Duration
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
}

// Join runs every join phase in order.
func Join(ctx context.Context, o JoinOptions) (*JoinResult, error) {
	j, err := newJoinRun(o)
	if err != nil {
		return nil, err
	}
	if err := phase.Run(ctx, joinPhases(), j, phase.Options{Command: "join", Task: o.Task}); err != nil {
		return nil, err
	}
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
	if o.CSRTimeout == 0 {
		o.CSRTimeout = 2 * time.Minute
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 2 * time.Minute
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
		return nil
	}
	pool := x509.NewCertPool()
	pool.AddCert(j.info.CA)
	// Only the endpoint discovery verified gets the token.
	cli, err := newAPIClient(clientOptions{
		Servers: []string{j.info.Endpoint}, CAs: pool, Token: j.token,
		UserAgent: "anvil-join (" + j.o.NodeName + ")", Log: j.log,
	})
	if err != nil {
		return err
	}
	defer cli.close()
	key, err := pki.NewKey("")
	if err != nil {
		return err
	}
	certPEM, err := requestNodeCertificate(ctx, cli, csrRequest{NodeName: j.o.NodeName, Key: key, Wait: j.o.CSRTimeout, Log: j.log})
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	j.creds = Credentials{Server: j.servers[0], CAPEM: j.info.CAPEM, CertPEM: certPEM, KeyPEM: keyPEM}
	j.o.Task.Say("client certificate for %s issued", NodeUser(j.o.NodeName))
	return nil
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

func joinAgent(ctx context.Context, j *joinRun) error {
	cfg := Config{
		NodeName: j.o.NodeName,
		Role:     v1alpha1.RoleWorker,
		Servers:  j.servers,
		NodeIP:   j.o.NodeIP,
		Labels:   j.o.Labels,
		Taints:   j.o.Taints,
	}
	res, err := Install(ctx, InstallOptions{
		Root: j.o.Root, Layout: j.o.Layout, Anvil: j.o.Anvil, KubernetesVersion: j.o.KubernetesVersion,
		Config: cfg, Log: j.log,
	})
	if err != nil {
		return err
	}
	j.result = JoinResult{NodeName: j.o.NodeName, Kubeconfig: res.Kubeconfig, ConfigFile: res.ConfigFile, Servers: j.servers, AlreadyJoined: j.joined}
	return nil
}

// joinWait reads the Node with the node's own credentials until the agent
// has registered it and it is Ready.
func joinWait(ctx context.Context, j *joinRun) error {
	pool, err := j.creds.caPool()
	if err != nil {
		return err
	}
	tc, err := j.creds.cert()
	if err != nil {
		return err
	}
	cli, err := newAPIClient(clientOptions{Servers: j.servers, CAs: pool, ClientCert: func() *tls.Certificate { return tc }, Log: j.log})
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

func uniqueServers(in []string) []string {
	var out []string
	for _, s := range in {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
