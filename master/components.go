package master

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/pki"
)

// Component names. The Kubernetes ones are images' names for the binaries.
const (
	Etcd              = "etcd"
	APIServer         = images.KubeAPIServer
	ControllerManager = images.KubeControllerManager
	Scheduler         = images.KubeScheduler
	// VIP holds the floating control-plane address (with controlPlane.vip).
	VIP = "vip"
	// Approver approves kubelet certificates (package approver).
	Approver = "approver"
)

// ApproverHealthPort serves the approver's /healthz on loopback.
const ApproverHealthPort = 10263

// restart is every control-plane component's restart policy: quick enough
// that a crash costs a second or two, capped so a crash loop does not spin.
func restart() component.RestartPolicy {
	return component.RestartPolicy{Delay: 2 * time.Second, MaxDelay: 30 * time.Second}
}

// openFiles is the open-file limit of etcd and the apiserver, which hold a
// socket per client and per watch.
const openFiles = 1 << 20

// Components returns this master's control-plane components in start order:
// etcd, the apiserver, then the controller-manager and the scheduler. This
// is the one place their command lines are declared.
func Components(p Plan) ([]component.Spec, error) {
	p, err := p.Complete()
	if err != nil {
		return nil, err
	}
	if !p.Node.IsMaster() {
		return nil, fmt.Errorf("node %s is a %s, not a master: it runs no control plane", p.Node.Name, p.Node.Role)
	}
	var out []component.Spec
	for _, build := range []func(Plan) (component.Spec, error){
		etcdComponent,
		apiserverComponent,
		controllerManagerComponent,
		schedulerComponent,
	} {
		c, err := build(p)
		if err != nil {
			return nil, err
		}
		if err := c.Validate(); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	approver := approverComponent(p)
	if err := approver.Validate(); err != nil {
		return nil, err
	}
	out = append(out, approver)
	if p.Cluster.ControlPlane.VIP.IsValid() {
		c := vipComponent(p)
		if err := c.Validate(); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// vipComponent holds the floating control-plane address on whichever master
// leads the election on the anvil-vip Lease, through this master's own
// apiserver: a master whose apiserver is down cannot keep the address.
func vipComponent(p Plan) component.Spec {
	kc := p.kubeconfig(pki.VIPKubeconfig)
	vipHealthz := "http://127.0.0.1:" + strconv.Itoa(VIPHealthPort) + "/healthz"
	return component.Spec{
		Name:        VIP,
		Unit:        "anvil-vip.service",
		Description: "anvil floating control-plane address " + p.Cluster.ControlPlane.VIP.String(),
		Binary:      p.AnvilBinary,
		Subcommand:  []string{"vip"},
		Args: []component.Arg{
			{Name: "address", Value: p.Cluster.ControlPlane.VIP.String()},
			{Name: "node-address", Value: p.AdvertiseAddress.String()},
			{Name: "kubeconfig", Value: kc},
			{Name: "identity", Value: p.Node.Name},
		},
		Files: []component.File{{Path: kc, Mode: 0o600, Secret: true}},
		Ports: []component.Port{{Name: "health", Address: "127.0.0.1", Number: VIPHealthPort, Protocol: "TCP"}},
		Health: component.Health{
			Live:  &component.Probe{URL: vipHealthz},
			Ready: &component.Probe{URL: vipHealthz},
		},
		Requires: []string{APIServer},
		Restart:  restart(),
		Notify:   true,
		Watchdog: 0,
		Image:    anvilImage(p),
		// It adds and drops the address (netlink) and announces it with
		// gratuitous ARP (a raw packet socket); it writes nothing.
		Capabilities: []string{"NET_ADMIN", "NET_RAW"},
		Sandbox:      component.Sandbox{PacketSockets: true},
		Requests:     component.Requests{CPU: "10m", Memory: "20Mi"},
	}
}

// approverComponent approves kubelet certificates on every master, one at a
// time (package approver), through this master's own apiserver.
func approverComponent(p Plan) component.Spec {
	kc := p.kubeconfig(pki.ApproverKubeconfig)
	healthz := "http://127.0.0.1:" + strconv.Itoa(ApproverHealthPort) + "/healthz"
	return component.Spec{
		Name:        Approver,
		Unit:        "anvil-approver.service",
		Description: "anvil kubelet certificate approver",
		Binary:      p.AnvilBinary,
		Subcommand:  []string{"approver"},
		Args: []component.Arg{
			{Name: "kubeconfig", Value: kc},
			{Name: "identity", Value: p.Node.Name},
			{Name: "health-address", Value: "127.0.0.1:" + strconv.Itoa(ApproverHealthPort)},
		},
		Files: []component.File{{Path: kc, Mode: 0o600, Secret: true}},
		Ports: []component.Port{{Name: "health", Address: "127.0.0.1", Number: ApproverHealthPort, Protocol: "TCP"}},
		Health: component.Health{
			Live:  &component.Probe{URL: healthz},
			Ready: &component.Probe{URL: healthz},
		},
		Requires: []string{APIServer},
		Restart:  restart(),
		Image:    anvilImage(p),
		Requests: component.Requests{CPU: "10m", Memory: "20Mi"},
		// Fully confined (the zero Sandbox): it only talks to the
		// apiserver and writes nothing.
	}
}

func etcdComponent(p Plan) (component.Spec, error) {
	etcdPKI := p.Root.Join(hostfs.PKIDir, "etcd")
	return component.Spec{
		Name:        Etcd,
		Unit:        "anvil-etcd.service",
		Description: "etcd member embedded in anvil",
		Binary:      p.AnvilBinary,
		Subcommand:  []string{"etcd"},
		// Everything else is in the config file, in etcd's own keys, so
		// etcd's documentation and auditing tools apply to it unchanged.
		Args: []component.Arg{{Name: "config", Value: p.path(EtcdConfigFile)}},
		Files: []component.File{
			{Path: p.path(EtcdConfigFile), Mode: 0o600},
			{Path: etcdPKI, Mode: 0o700, Dir: true},
			{Path: p.cert(pki.EtcdCACertAndKeyBaseName), Mode: 0o600},
			{Path: p.cert(pki.EtcdServerCertAndKeyBaseName), Mode: 0o600},
			{Path: p.key(pki.EtcdServerCertAndKeyBaseName), Mode: 0o600, Secret: true},
			{Path: p.cert(pki.EtcdPeerCertAndKeyBaseName), Mode: 0o600},
			{Path: p.key(pki.EtcdPeerCertAndKeyBaseName), Mode: 0o600, Secret: true},
			// All it writes, its WAL included; the confined unit
			// (the zero Sandbox) may write nowhere else.
			{Path: p.Root.EtcdData(), Mode: 0o700, Dir: true, Writable: true, Secret: true},
		},
		Ports: []component.Port{
			{Name: "client", Number: etcd.ClientPort, Protocol: "TCP"},
			{Name: "peer", Address: p.AdvertiseAddress.String(), Number: etcd.PeerPort, Protocol: "TCP"},
			{Name: "metrics", Address: "127.0.0.1", Number: etcd.MetricsPort, Protocol: "TCP"},
			{Name: "client-http", Address: "127.0.0.1", Number: etcd.ClientHTTPPort, Protocol: "TCP"},
		},
		// Plain HTTP on loopback, as kubeadm does: the probes then need no
		// client certificate, and nothing but health and metrics is served.
		// A joining master's member is a learner until it has caught up;
		// it is ready (it serves and replicates) before it may vote, so
		// readiness leaves out the non_learner check.
		Health: component.Health{
			Live:  &component.Probe{URL: etcdMetricsURL() + "/livez"},
			Ready: &component.Probe{URL: etcdMetricsURL() + "/readyz?exclude=non_learner"},
		},
		Restart:     restart(),
		Notify:      true,
		Watchdog:    30 * time.Second,
		Image:       anvilImage(p),
		LimitNOFILE: openFiles,
		Requests:    component.Requests{CPU: "100m", Memory: "100Mi"},
	}, nil
}

func apiserverComponent(p Plan) (component.Spec, error) {
	ca := p.cert(pki.CACertAndKeyBaseName)
	args := []component.Arg{
		{Name: "advertise-address", Value: p.AdvertiseAddress.String()},
		{Name: "secure-port", Value: strconv.Itoa(p.apiserverPort())},
		// Node lets each node touch only its own objects; RBAC governs the
		// rest. Never AlwaysAllow.
		{Name: "authorization-mode", Value: "Node,RBAC"},
		// NodeRestriction stops a node's credentials from changing other
		// Nodes, their pods, or labels that steer workloads.
		// DenyServiceExternalIPs refuses a Service's spec.externalIPs, with
		// which anyone who may create a Service could take over traffic to
		// any address (CVE-2020-8554; CIS 1.2.3): nothing anvil runs uses
		// them, and a LoadBalancer or NodePort Service does the same job.
		{Name: "enable-admission-plugins", Value: "NodeRestriction,DenyServiceExternalIPs"},
		// On SIGTERM, close watches within 10 s (rate-limited, clients
		// re-watch elsewhere) instead of letting them hold the HTTP
		// server's shutdown for its full minute: a restart (a renewal,
		// an upgrade) takes seconds, not 70.
		{Name: "shutdown-watch-termination-grace-period", Value: "10s"},
		// Bootstrap tokens are how a joining node authenticates before it has
		// a certificate (anvil join).
		{Name: "enable-bootstrap-token-auth", Value: "true"},
		// Anonymous requests only for the health endpoints and the
		// cluster-info ConfigMap join discovery reads; everything else needs
		// credentials.
		{Name: "authentication-config", Value: p.path(AuthenticationConfigFile)},
		{Name: "client-ca-file", Value: ca},
		{Name: "tls-cert-file", Value: p.cert(pki.APIServerCertAndKeyBaseName)},
		{Name: "tls-private-key-file", Value: p.key(pki.APIServerCertAndKeyBaseName)},
		{Name: "tls-min-version", Value: component.TLSMinVersion},
		{Name: "tls-cipher-suites", Value: strings.Join(component.TLSCipherSuites(), ",")},
		// The apiserver's own client certificate for logs, exec and
		// port-forward on nodes.
		{Name: "kubelet-client-certificate", Value: p.cert(pki.APIServerKubeletClientCertAndKeyBaseName)},
		{Name: "kubelet-client-key", Value: p.key(pki.APIServerKubeletClientCertAndKeyBaseName)},
		// ...and checks the kubelet's serving certificate against the
		// cluster CA, which signs only what anvil's approver let through
		// (a node's own names and addresses): CIS 1.2.5.
		{Name: "kubelet-certificate-authority", Value: ca},
		// Reach nodes by address: bare-metal hostnames often do not resolve.
		{Name: "kubelet-preferred-address-types", Value: "InternalIP,ExternalIP,Hostname"},
		// The aggregation layer: the apiserver proxies to extension
		// apiservers with the front-proxy client certificate, and they trust
		// the identity headers only from a certificate of the front-proxy CA.
		{Name: "proxy-client-cert-file", Value: p.cert(pki.FrontProxyClientCertAndKeyBaseName)},
		{Name: "proxy-client-key-file", Value: p.key(pki.FrontProxyClientCertAndKeyBaseName)},
		{Name: "requestheader-client-ca-file", Value: p.cert(pki.FrontProxyCACertAndKeyBaseName)},
		{Name: "requestheader-allowed-names", Value: "front-proxy-client"},
		{Name: "requestheader-extra-headers-prefix", Value: "X-Remote-Extra-"},
		{Name: "requestheader-group-headers", Value: "X-Remote-Group"},
		{Name: "requestheader-username-headers", Value: "X-Remote-User"},
		// The local etcd member only, over mutual TLS with the etcd CA.
		{Name: "etcd-servers", Value: etcdLocalClientURL()},
		{Name: "etcd-cafile", Value: p.cert(pki.EtcdCACertAndKeyBaseName)},
		{Name: "etcd-certfile", Value: p.cert(pki.APIServerEtcdClientCertAndKeyBaseName)},
		{Name: "etcd-keyfile", Value: p.key(pki.APIServerEtcdClientCertAndKeyBaseName)},
		// Service-account tokens are signed with sa.key and checked with
		// sa.pub; the issuer is the in-cluster URL kubeadm uses.
		{Name: "service-account-issuer", Value: p.serviceAccountIssuer()},
		{Name: "service-account-key-file", Value: p.pkiFile(pki.ServiceAccountPubKeyName)},
		{Name: "service-account-signing-key-file", Value: p.pkiFile(pki.ServiceAccountKeyName)},
		// A token stops working when its ServiceAccount is deleted.
		{Name: "service-account-lookup", Value: "true"},
		{Name: "service-cluster-ip-range", Value: p.Cluster.Networking.ServiceCIDR.String()},
		// Network and storage add-ons run privileged; Pod Security
		// admission restricts it per namespace.
		{Name: "allow-privileged", Value: "true"},
		// Secrets are stored encrypted (secretbox) in etcd and in backups.
		{Name: "encryption-provider-config", Value: p.path(EncryptionConfigFile)},
		// Who did what, kept 30 days, rotated at 100 MB, at most 10 files.
		{Name: "audit-policy-file", Value: p.path(AuditPolicyFile)},
		{Name: "audit-log-path", Value: p.path(AuditLogFile)},
		{Name: "audit-log-maxage", Value: "30"},
		{Name: "audit-log-maxbackup", Value: "10"},
		{Name: "audit-log-maxsize", Value: "100"},
		{Name: "audit-log-compress", Value: "true"},
		// /debug/pprof exposes internals and costs CPU; off unless asked for.
		{Name: "profiling", Value: "false"},
	}
	args, err := component.MergeArgs(APIServer, args, p.Cluster.Components.APIServer.ExtraArgs)
	if err != nil {
		return component.Spec{}, fmt.Errorf("components.apiServer.extraArgs: %w", err)
	}
	files := append(pkiFiles(p, ca,
		p.cert(pki.APIServerCertAndKeyBaseName), p.key(pki.APIServerCertAndKeyBaseName),
		p.cert(pki.APIServerKubeletClientCertAndKeyBaseName), p.key(pki.APIServerKubeletClientCertAndKeyBaseName),
		p.cert(pki.FrontProxyCACertAndKeyBaseName),
		p.cert(pki.FrontProxyClientCertAndKeyBaseName), p.key(pki.FrontProxyClientCertAndKeyBaseName),
		p.cert(pki.EtcdCACertAndKeyBaseName),
		p.cert(pki.APIServerEtcdClientCertAndKeyBaseName), p.key(pki.APIServerEtcdClientCertAndKeyBaseName),
		p.pkiFile(pki.ServiceAccountPubKeyName), p.pkiFile(pki.ServiceAccountKeyName),
	),
		component.File{Path: p.path(AuthenticationConfigFile), Mode: 0o600},
		component.File{Path: p.path(EncryptionConfigFile), Mode: 0o600, Secret: true},
		component.File{Path: p.path(AuditPolicyFile), Mode: 0o600},
	)
	// The audit log's directory, wherever an operator's audit-log-path
	// puts it: the only place the apiserver writes.
	logPath, _ := component.Spec{Args: args}.Arg("audit-log-path")
	logDir, err := auditLogDir(logPath)
	if err != nil {
		return component.Spec{}, fmt.Errorf("components.apiServer.extraArgs: %w", err)
	}
	if logDir != "" {
		files = append(files, component.File{Path: logDir, Mode: 0o700, Dir: true, Writable: true})
	}
	healthz := "https://" + p.hostPort(p.apiserverPort())
	return component.Spec{
		Name:        APIServer,
		Description: "Kubernetes API server",
		Binary:      p.k8sBinary(APIServer),
		Args:        args,
		Files:       files,
		Ports:       []component.Port{{Name: "https", Number: uint16(p.apiserverPort()), Protocol: "TCP"}},
		// Through the advertise address, which the serving certificate
		// names; anonymous access to these paths is allowed.
		Health: component.Health{
			Live:  &component.Probe{URL: healthz + "/livez", CAFile: ca},
			Ready: &component.Probe{URL: healthz + "/readyz", CAFile: ca},
		},
		Restart:     restart(),
		Requires:    []string{Etcd},
		Image:       k8sImage(p, APIServer),
		LimitNOFILE: openFiles,
		Requests:    component.Requests{CPU: "250m"},
	}, nil
}

func controllerManagerComponent(p Plan) (component.Spec, error) {
	ca := p.cert(pki.CACertAndKeyBaseName)
	kubeconfig := p.kubeconfig(pki.ControllerManagerKubeconfig)
	args := []component.Arg{
		// Serve health and metrics on loopback only.
		{Name: "bind-address", Value: "127.0.0.1"},
		{Name: "secure-port", Value: strconv.Itoa(ControllerManagerPort)},
		{Name: "kubeconfig", Value: kubeconfig},
		// Requests to its endpoints are authenticated and authorized by the
		// apiserver (TokenReview, SubjectAccessReview).
		{Name: "authentication-kubeconfig", Value: kubeconfig},
		{Name: "authorization-kubeconfig", Value: kubeconfig},
		{Name: "client-ca-file", Value: ca},
		{Name: "requestheader-client-ca-file", Value: p.cert(pki.FrontProxyCACertAndKeyBaseName)},
		{Name: "tls-min-version", Value: component.TLSMinVersion},
		{Name: "tls-cipher-suites", Value: strings.Join(component.TLSCipherSuites(), ",")},
		// Each controller acts as its own service account, so RBAC can hold
		// it to what it needs instead of the manager's full rights.
		{Name: "use-service-account-credentials", Value: "true"},
		// The defaults, plus the two that make token joins work: the
		// bootstrap signer signs cluster-info for each token (JWS), the token
		// cleaner deletes expired tokens.
		{Name: "controllers", Value: "*,bootstrapsigner,tokencleaner"},
		// Node CSRs (TLS bootstrap, renewal) are signed with the cluster CA:
		// its signing certificate alone, as the signer takes exactly one
		// (ca.crt is the trust bundle, two CAs during a rotation).
		{Name: "cluster-signing-cert-file", Value: p.pkiFile(pki.ClusterSigningCertFile)},
		{Name: "cluster-signing-key-file", Value: p.key(pki.CACertAndKeyBaseName)},
		// Published to every namespace as kube-root-ca.crt and put in
		// service-account token Secrets.
		{Name: "root-ca-file", Value: ca},
		// Fills the service-account token Secrets operators still create by
		// hand, as kubeadm does.
		{Name: "service-account-private-key-file", Value: p.pkiFile(pki.ServiceAccountKeyName)},
		{Name: "cluster-name", Value: p.Cluster.Name},
		{Name: "service-cluster-ip-range", Value: p.Cluster.Networking.ServiceCIDR.String()},
	}
	if pod := p.Cluster.Networking.PodCIDR; pod.IsValid() {
		// Give each Node a pod CIDR from the cluster's, for CNIs that use
		// the Node's podCIDR.
		args = append(args,
			component.Arg{Name: "allocate-node-cidrs", Value: "true"},
			component.Arg{Name: "cluster-cidr", Value: pod.String()},
		)
	}
	args = append(args,
		// Finished pods (Succeeded, Failed) are deleted, oldest first, once
		// there are more than 1000 (CIS 1.3.1). Upstream's 12500 lets Jobs'
		// and evicted pods pile up in etcd, in every pod list and watch,
		// and in backups; the benchmark's example, 10, would delete a
		// failed pod before anyone read why it failed. 1000 keeps the
		// recent ones on a cluster of anvil's size.
		component.Arg{Name: "terminated-pod-gc-threshold", Value: "1000"},
		// With several masters, one manager acts at a time.
		component.Arg{Name: "leader-elect", Value: "true"},
		component.Arg{Name: "profiling", Value: "false"},
	)
	args, err := component.MergeArgs(ControllerManager, args, p.Cluster.Components.ControllerManager.ExtraArgs)
	if err != nil {
		return component.Spec{}, fmt.Errorf("components.controllerManager.extraArgs: %w", err)
	}
	return component.Spec{
		Name:        ControllerManager,
		Description: "Kubernetes controller manager",
		Binary:      p.k8sBinary(ControllerManager),
		Args:        args,
		Files: append(pkiFiles(p, ca, p.key(pki.CACertAndKeyBaseName), p.pkiFile(pki.ClusterSigningCertFile),
			p.cert(pki.FrontProxyCACertAndKeyBaseName),
			p.pkiFile(pki.ServiceAccountKeyName),
		), component.File{Path: kubeconfig, Mode: 0o600, Secret: true}),
		Ports: []component.Port{{Name: "https", Address: "127.0.0.1", Number: ControllerManagerPort, Protocol: "TCP"}},
		// The manager serves a self-signed certificate it makes at start.
		Health: component.Health{
			Live:  &component.Probe{URL: "https://127.0.0.1:" + strconv.Itoa(ControllerManagerPort) + "/healthz", InsecureSkipVerify: true},
			Ready: &component.Probe{URL: "https://127.0.0.1:" + strconv.Itoa(ControllerManagerPort) + "/healthz", InsecureSkipVerify: true},
		},
		Restart:  restart(),
		Requires: []string{APIServer},
		Image:    k8sImage(p, ControllerManager),
		Requests: component.Requests{CPU: "200m"},
		// Fully confined (the zero Sandbox): it writes nothing, its
		// serving certificate is made in memory. Where no kubelet made
		// the flexvolume plugin directory, the manager's attempt to make
		// it fails with one logged error, and flexvolume (deprecated)
		// stays off.
	}, nil
}

func schedulerComponent(p Plan) (component.Spec, error) {
	kubeconfig := p.kubeconfig(pki.SchedulerKubeconfig)
	args := []component.Arg{
		// The kubeconfig and profiling=false are in the config file: the
		// scheduler's --kubeconfig and --profiling flags are deprecated.
		{Name: "config", Value: p.path(SchedulerConfigFile)},
		{Name: "bind-address", Value: "127.0.0.1"},
		{Name: "secure-port", Value: strconv.Itoa(SchedulerPort)},
		{Name: "authentication-kubeconfig", Value: kubeconfig},
		{Name: "authorization-kubeconfig", Value: kubeconfig},
		{Name: "tls-min-version", Value: component.TLSMinVersion},
		{Name: "tls-cipher-suites", Value: strings.Join(component.TLSCipherSuites(), ",")},
		// Honoured alongside --config; one scheduler acts at a time.
		{Name: "leader-elect", Value: "true"},
	}
	args, err := component.MergeArgs(Scheduler, args, p.Cluster.Components.Scheduler.ExtraArgs)
	if err != nil {
		return component.Spec{}, fmt.Errorf("components.scheduler.extraArgs: %w", err)
	}
	healthz := "https://127.0.0.1:" + strconv.Itoa(SchedulerPort) + "/healthz"
	return component.Spec{
		Name:        Scheduler,
		Description: "Kubernetes scheduler",
		Binary:      p.k8sBinary(Scheduler),
		Args:        args,
		Files: []component.File{
			{Path: p.path(SchedulerConfigFile), Mode: 0o600},
			{Path: kubeconfig, Mode: 0o600, Secret: true},
		},
		Ports: []component.Port{{Name: "https", Address: "127.0.0.1", Number: SchedulerPort, Protocol: "TCP"}},
		// Like the manager, a self-signed serving certificate.
		Health: component.Health{
			Live:  &component.Probe{URL: healthz, InsecureSkipVerify: true},
			Ready: &component.Probe{URL: healthz, InsecureSkipVerify: true},
		},
		Restart:  restart(),
		Requires: []string{APIServer},
		Image:    k8sImage(p, Scheduler),
		Requests: component.Requests{CPU: "100m"},
		// Fully confined (the zero Sandbox): it writes nothing.
	}, nil
}

// auditLogDir is the directory of the audit log at logPath (a value of
// the apiserver's --audit-log-path): "" when the log goes to standard
// output ("-"), to /dev/null or nowhere (""), which need no directory.
func auditLogDir(logPath string) (string, error) {
	v := strings.TrimSpace(logPath)
	switch {
	case v == "" || v == "-" || path.Clean(v) == "/dev/null":
		return "", nil
	case !path.IsAbs(v):
		return "", fmt.Errorf("audit-log-path %q is not an absolute path", logPath)
	}
	return path.Dir(path.Clean(v)), nil
}

// pkiFiles lists the PKI directory (mounted whole, since certificates are
// renewed by rename while components run) and the files in it a component
// uses, all 0600 as package pki writes them (CIS 1.1.20 for certificates).
func pkiFiles(p Plan, paths ...string) []component.File {
	out := []component.File{{Path: p.Root.Path(hostfs.PKIDir), Mode: 0o700, Dir: true}}
	for _, f := range paths {
		out = append(out, component.File{Path: f, Mode: 0o600, Secret: strings.HasSuffix(f, ".key")})
	}
	return out
}

func k8sImage(p Plan, name string) component.Image {
	return component.Image{
		Ref:    images.ImageRef(p.KubernetesVersion, name),
		Binary: path.Join(images.ImageBinDir, name),
	}
}

// anvilImage runs etcd in the static-pod layout; images bundles it under
// the Kubernetes release it was shipped with.
func anvilImage(p Plan) component.Image {
	return component.Image{
		Ref:    images.ImageRef(p.KubernetesVersion, images.AnvilBinary),
		Binary: path.Join(images.ImageBinDir, images.AnvilBinary),
	}
}
