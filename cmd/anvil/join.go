package main

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/agent"
	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

type joinFlags struct {
	nodeFlags
	token      string
	tokenFile  string
	caHash     string
	nodeName   string
	nodeIP     string
	file       string
	node       string
	csrTimeout time.Duration
	timeout    time.Duration
	runtime    string
	dryRun     bool
	// runtimeFromFile is true when --runtime was not given: the cluster
	// file's host says.
	runtimeFromFile bool

	controlPlane bool
	certKey      string
	certKeyFile  string

	// in is stdin, buffered once so that the token and the certificate
	// key can be its first and second lines.
	in *bufio.Reader
}

func (f *joinFlags) stdin(a *app) *bufio.Reader {
	if f.in == nil {
		f.in = bufio.NewReader(io.LimitReader(a.in, 8192))
	}
	return f.in
}

func newJoinCmd(a *app) *cobra.Command {
	f := &joinFlags{}
	cmd := &cobra.Command{
		Use:   "join ENDPOINT --token-file FILE|- --ca-cert-hash sha256:HASH",
		Short: "Join this machine to a cluster as a worker node, or as a master with --control-plane",
		Long: `Joins this machine to the cluster whose apiserver is ENDPOINT as a worker that
runs pods (--runtime containerd, the default): it reads the cluster's node
settings, gets the node agent and the kubelet a client certificate each,
starts containerd and the kubelet, which registers the Node, and runs the
node agent (anvil-agent) for the pod network and image archives. With
--runtime none the machine runs no pod: the agent itself registers the Node
and keeps its heartbeat.

With --control-plane it joins as a master instead: it fetches the shared CAs
and keys that 'anvil init phase upload-certs' sealed in the cluster (they
expire after an hour; --certificate-key decrypts them), issues its own
certificates, joins etcd as a learner and promotes itself once caught up,
then starts its apiserver, controller-manager and scheduler. A stale etcd
member with this master's name or peer URL is replaced; a join that would
cost etcd its quorum is refused. Re-running a join that failed half-way
converges.

The phases, in order (node-config and node only with --runtime containerd):
` + agent.JoinPhaseHelp() + `
--dry-run runs preflight, discovery and node-config, which change nothing,
and prints what the other phases would do.

The bootstrap token is a credential: prefer --token-file - (stdin) to
--token, which shows in the process list while join runs. No credential is
sent anywhere before the cluster's CA has matched --ca-cert-hash; the token
is never written to disk, and the agent runs with the node's own
certificate, not the token.

A token made with 'anvil token create --node NAME' (as 'anvil cluster apply'
makes one for each host) gets a client certificate for node NAME alone
(--node-name must be NAME), and only while no Node NAME exists: a machine
that was reset or reinstalled joins again once its old Node is deleted
(kubectl delete node NAME).`,
		Example: `  # The join command 'anvil init' prints, token on stdin
  echo "$TOKEN" | anvil join https://10.0.0.10:6443 --token-file - \
      --ca-cert-hash sha256:0123…cdef

  # From a cluster file, as 'anvil cluster apply' runs it on a worker
  anvil join -f cluster.yaml --node w1 --token-file /run/anvil/token --ca-cert-hash sha256:…

  # Another master: token and certificate key on stdin, one per line, as
  # 'anvil init phase upload-certs' prints the command
  printf '%s\n%s\n' "$TOKEN" "$KEY" | anvil join https://10.0.0.10:6443 --control-plane \
      --token-file - --certificate-key-file - --ca-cert-hash sha256:0123…cdef

  # Under a directory, supervised by anvil (tests)
  anvil join 10.199.1.2 --token-file - --ca-cert-hash sha256:… --node-name w1 \
      --layout process --root /tmp/w1`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.controlPlane {
				return runControlPlaneJoin(cmd, a, f, args)
			}
			if f.certKey != "" || f.certKeyFile != "" {
				return usageError("--certificate-key is for a control-plane join: add --control-plane")
			}
			f.runtimeFromFile = !cmd.Flags().Changed("runtime")
			o, err := f.options(a, args)
			if err != nil {
				return err
			}
			task, done := a.nodeTask(o.NodeName)
			o.Task = task
			res, err := agent.Join(cmd.Context(), o)
			done()
			if err != nil {
				return err
			}
			if o.DryRun {
				fmt.Fprintf(a.out, "Dry run of joining node %s (runtime %s); nothing was changed. The join would:\n", res.NodeName, res.Runtime)
				for _, l := range res.Plan {
					fmt.Fprintf(a.out, "  %s\n", l)
				}
				return nil
			}
			verb := "joined"
			if res.AlreadyJoined {
				verb = "was already joined"
			}
			fmt.Fprintf(a.out, "Node %s %s the cluster (%s) and is Ready after %.1fs.\nAgent: %s, kubeconfig %s\n",
				res.NodeName, verb, strings.Join(res.Servers, ", "), res.Elapsed.Seconds(), res.ConfigFile, res.Kubeconfig)
			return nil
		},
	}
	f.nodeFlags.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.token, "token", "", "bootstrap token id.secret (visible in the process list; prefer --token-file)")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the bootstrap token, or - for stdin")
	fl.StringVar(&f.caHash, "ca-cert-hash", "", "sha256:HASH of the cluster CA's public key (anvil certs ca-hash on a master)")
	fl.StringVar(&f.nodeName, "node-name", "", "this node's name (default: the hostname, lowercased)")
	fl.StringVar(&f.nodeIP, "node-ip", "", "the InternalIP the node reports (default: the address of the default route's interface)")
	fl.StringVarP(&f.file, "file", "f", "", "cluster file; with --node, this machine's host in it")
	fl.StringVar(&f.node, "node", "", "this machine's host name in the cluster file")
	fl.DurationVar(&f.csrTimeout, "csr-timeout", 2*time.Minute, "how long to wait for the node's certificate to be approved and signed")
	fl.BoolVar(&f.controlPlane, "control-plane", false, "join as a master: etcd member, apiserver, controller-manager, scheduler (and the VIP manager)")
	fl.StringVar(&f.certKey, "certificate-key", "", "with --control-plane: key of the uploaded shared certificates (visible in the process list; prefer --certificate-key-file)")
	fl.StringVar(&f.certKeyFile, "certificate-key-file", "", "with --control-plane: file holding the certificate key, or - for stdin (the line after the token when both come from stdin)")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the apiserver, and then for the Node to be Ready")
	fl.StringVar(&f.runtime, "runtime", string(v1alpha1.RuntimeContainerd), "containerd (this machine runs pods: containerd and the kubelet) or none (the agent keeps the Node; no pod runs here); with -f, the host's runtime")
	fl.BoolVar(&f.dryRun, "dry-run", false, "check the inputs and the cluster, print what join would do, and change nothing")
	return cmd
}

func (f *joinFlags) options(a *app, args []string) (agent.JoinOptions, error) {
	o := agent.JoinOptions{
		Root: hostfs.Root(f.root), Layout: v1alpha1.Layout(f.layout), Force: f.force,
		DiscoveryTimeout: f.timeout, CSRTimeout: f.csrTimeout, ReadyTimeout: f.timeout,
		NodeName: f.nodeName, Log: a.logger(), Runtime: v1alpha1.Runtime(f.runtime), DryRun: f.dryRun,
	}
	if len(args) == 1 {
		o.Endpoint = args[0]
	}
	if f.file != "" {
		if err := f.fromClusterFile(a, &o); err != nil {
			return o, err
		}
	}
	if !slices.Contains(v1alpha1.Runtimes(), o.Runtime) {
		return o, usageError("--runtime %q: use containerd or none", f.runtime)
	}
	c, err := f.common(a, o.Endpoint, o.NodeName)
	if err != nil {
		return o, err
	}
	o.Endpoint, o.Token, o.CAHash, o.NodeName = c.endpoint, c.token, c.caHash, c.name
	if c.nodeIP.IsValid() {
		o.NodeIP = c.nodeIP
	}
	if o.Layout == "" {
		o.Layout = v1alpha1.LayoutSystemd
	}
	if o.Layout == v1alpha1.LayoutProcess {
		self, err := os.Executable()
		if err != nil {
			return o, err
		}
		o.Anvil = self
	}
	return o, nil
}

// joinCommon is what both kinds of join take from the same flags.
type joinCommon struct {
	endpoint string
	token    pki.Token
	caHash   pki.CAHash
	nodeIP   netip.Addr
	name     string
}

// common checks the endpoint (from the argument or the cluster file), reads
// the token, and parses the CA hash, --node-ip and the node's name (the
// hostname, lowercased, when neither flag nor file names it).
func (f *joinFlags) common(a *app, endpoint, name string) (joinCommon, error) {
	c := joinCommon{name: name}
	if endpoint == "" {
		return c, usageError("name an apiserver of the cluster: anvil join https://HOST:6443 … (or -f cluster.yaml --node NAME)")
	}
	var err error
	if c.endpoint, err = agent.ParseEndpoint(endpoint); err != nil {
		return c, usageError("%v", err)
	}
	if c.token, err = f.readToken(f.stdin(a)); err != nil {
		return c, err
	}
	if f.caHash == "" {
		return c, usageError("--ca-cert-hash sha256:HASH is required: it is how join knows it talks to your cluster (anvil certs ca-hash prints it on a master)")
	}
	if c.caHash, err = pki.ParseCAHash(f.caHash); err != nil {
		return c, usageError("--ca-cert-hash: %v", err)
	}
	if f.nodeIP != "" {
		if c.nodeIP, err = netip.ParseAddr(f.nodeIP); err != nil {
			return c, usageError("--node-ip %q is not an IP address", f.nodeIP)
		}
	}
	if c.name == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, err
		}
		c.name = strings.ToLower(h)
	}
	return c, nil
}

// readToken takes the token from --token or --token-file (- is the first
// line of stdin), exactly one of them.
func (f *joinFlags) readToken(stdin *bufio.Reader) (pki.Token, error) {
	line, err := readSecret(stdin, "token", f.token, f.tokenFile, "a bootstrap token is required: --token-file FILE, --token-file - (stdin) or --token")
	if err != nil {
		return pki.Token{}, err
	}
	t, err := pki.ParseToken(line.value)
	if err != nil {
		return pki.Token{}, line.wrap(err)
	}
	return t, nil
}

// readCertificateKey takes the key from --certificate-key or
// --certificate-key-file (- is the next line of stdin, after the token's
// when the token comes from stdin too).
func (f *joinFlags) readCertificateKey(stdin *bufio.Reader) (master.CertificateKey, error) {
	line, err := readSecret(stdin, "certificate-key", f.certKey, f.certKeyFile,
		"a control-plane join needs the certificate key: --certificate-key-file FILE, --certificate-key-file - (stdin) or --certificate-key (anvil init phase upload-certs prints it)")
	if err != nil {
		return master.CertificateKey{}, err
	}
	k, err := master.ParseCertificateKey(line.value)
	if err != nil {
		return k, line.wrap(err)
	}
	return k, nil
}

// secretLine is a secret as given, and where it came from for errors
// (which never repeat the secret).
type secretLine struct {
	value, from string
}

func (l secretLine) wrap(err error) error {
	if l.from == "" {
		return err
	}
	return fmt.Errorf("%s: %w", l.from, err)
}

// readSecret reads a secret given as --NAME VALUE or --NAME-file FILE (- is
// stdin, read one line at a time so that two secrets can share it).
func readSecret(stdin *bufio.Reader, name, value, file, missing string) (secretLine, error) {
	switch {
	case value != "" && file != "":
		return secretLine{}, usageError("give the %s once: --%s or --%s-file, not both", name, name, name)
	case value != "":
		return secretLine{value: strings.TrimSpace(value), from: "--" + name}, nil
	case file == "":
		return secretLine{}, usageError("%s", missing)
	}
	r, from := stdin, "the "+name+" on stdin"
	if file != "-" {
		fh, err := os.Open(file)
		if err != nil {
			return secretLine{}, fmt.Errorf("read the %s: %w", name, err)
		}
		defer fh.Close()
		r, from = bufio.NewReader(io.LimitReader(fh, 4096)), "the "+name+" in "+file
	}
	line, err := r.ReadString('\n')
	if err != nil && err != io.EOF {
		return secretLine{}, fmt.Errorf("read %s: %w", from, err)
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return secretLine{}, fmt.Errorf("%s: empty", from)
	}
	return secretLine{value: line, from: from}, nil
}

// clusterHost loads the cluster file and finds this machine's host in it,
// of the role the join is for.
func (f *joinFlags) clusterHost(a *app) (*v1alpha1.Cluster, v1alpha1.Host, error) {
	if f.node == "" {
		return nil, v1alpha1.Host{}, usageError("with -f, name this machine's host with --node NAME")
	}
	c, warnings, err := v1alpha1.Load(f.file)
	if err != nil {
		return nil, v1alpha1.Host{}, err
	}
	for _, w := range warnings {
		a.progress("warning: " + w.Error())
	}
	h, ok := c.Host(f.node)
	switch {
	case !ok:
		return nil, h, usageError("host %q is not in %s", f.node, f.file)
	case h.IsMaster() && !f.controlPlane:
		return nil, h, usageError("host %q is a master: masters join the control plane (anvil join --control-plane)", f.node)
	case !h.IsMaster() && f.controlPlane:
		return nil, h, usageError("host %q is a worker in %s: --control-plane is for masters", f.node, f.file)
	}
	return c, h, nil
}

// fromClusterFile takes the node's name, address, labels and taints, the
// masters to fail over to and the layout from the cluster file.
func (f *joinFlags) fromClusterFile(a *app, o *agent.JoinOptions) error {
	c, h, err := f.clusterHost(a)
	if err != nil {
		return err
	}
	if o.NodeName == "" {
		o.NodeName = h.Name
	}
	o.NodeIP = h.NodeAddress()
	o.Labels, o.Taints = h.Labels, h.Taints
	if f.runtimeFromFile && h.Runtime != "" {
		o.Runtime = h.Runtime
	}
	if o.Endpoint == "" {
		o.Endpoint = c.APIServerURL()
	}
	o.Servers = c.MasterURLs()
	if o.Layout == "" {
		o.Layout = c.ControlPlane.Layout
	}
	o.KubernetesVersion = c.KubernetesVersion
	return nil
}

// runControlPlaneJoin is `anvil join --control-plane`.
func runControlPlaneJoin(cmd *cobra.Command, a *app, f *joinFlags, args []string) error {
	o, err := f.controlPlaneOptions(a, args)
	if err != nil {
		return err
	}
	task, done := a.nodeTask(o.Node)
	o.Task = task
	res, err := master.JoinControlPlane(cmd.Context(), o)
	done()
	if err != nil {
		return err
	}
	fmt.Fprintf(a.out, "\nMaster %s joined the control plane (layout %s) in %.1fs; its apiserver is %s.\n",
		o.Node, res.Layout, res.Elapsed.Seconds(), res.Endpoint)
	fmt.Fprintf(a.out, "Use it:\n  export KUBECONFIG=%s\n  anvil etcd members\n", res.AdminKubeconfig)
	return nil
}

// controlPlaneOptions are the worker join's flags, read as a master's.
func (f *joinFlags) controlPlaneOptions(a *app, args []string) (master.JoinOptions, error) {
	o := master.JoinOptions{InitOptions: master.InitOptions{
		Root: hostfs.Root(f.root), Layout: v1alpha1.Layout(f.layout), Force: f.force,
		Timeout: f.timeout, Node: f.nodeName, Log: a.logger(),
	}}
	self, err := os.Executable()
	if err != nil {
		return o, err
	}
	o.Anvil = self
	if len(args) == 1 {
		o.Endpoint = args[0]
	}
	if f.file != "" {
		c, h, err := f.clusterHost(a)
		if err != nil {
			return o, err
		}
		o.Cluster, o.Node = c, h.Name
		if o.Endpoint == "" {
			o.Endpoint = c.APIServerURL()
		}
	}
	c, err := f.common(a, o.Endpoint, o.Node)
	if err != nil {
		return o, err
	}
	o.Endpoint, o.Token, o.CAHash, o.Node, o.AdvertiseAddress = c.endpoint, c.token, c.caHash, c.name, c.nodeIP
	if o.CertificateKey, err = f.readCertificateKey(f.stdin(a)); err != nil {
		return o, err
	}
	return o, nil
}
