package master

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/component"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/pki"
)

// ReadFunc returns the current content of a host path (as in
// /etc/anvil/encryption-config.yaml), or an error wrapping fs.ErrNotExist.
// The caller resolves the path under whatever root it writes to.
type ReadFunc func(hostPath string) ([]byte, error)

// ConfigFiles returns the files the control-plane components read besides
// certificates and kubeconfigs (which package pki writes), and the
// directories they write to, with their modes.
//
// The encryption configuration holds the key every Secret in etcd is
// encrypted with, so an existing one is never replaced: read returns it and
// it is kept byte for byte. A new key is made only when there is none. A
// joining master must be given the first master's file (through read), or
// it could not read the Secrets the others wrote.
func ConfigFiles(p Plan, read ReadFunc) ([]component.OutputFile, error) {
	p, err := p.Complete()
	if err != nil {
		return nil, err
	}
	enc, err := encryptionConfig(read)
	if err != nil {
		return nil, err
	}
	var out []component.OutputFile
	for _, f := range []struct {
		path string
		doc  any
	}{
		{EtcdConfigFile, etcdConfig(p)},
		{AuthenticationConfigFile, authenticationConfig()},
		{AuditPolicyFile, auditPolicy()},
		{SchedulerConfigFile, schedulerConfig(p)},
	} {
		b, err := marshalYAML(f.doc)
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", f.path, err)
		}
		out = append(out, component.OutputFile{Path: f.path, Mode: component.ConfigMode, Data: b})
	}
	out = append(out,
		component.OutputFile{Path: EncryptionConfigFile, Mode: component.ConfigMode, Data: enc, Secret: true},
		// etcd refuses a data directory others can read.
		component.OutputFile{Path: hostfs.EtcdDataDir, Mode: fs.ModeDir | 0o700},
	)
	// The audit log's, anvil's or the one an operator's audit-log-path
	// names (an existing directory is left as it is).
	logPath := AuditLogFile
	if v, ok := p.Cluster.Components.APIServer.ExtraArgs["audit-log-path"]; ok {
		logPath = v
	}
	logDir, err := auditLogDir(logPath)
	if err != nil {
		return nil, fmt.Errorf("components.apiServer.extraArgs: %w", err)
	}
	if logDir != "" {
		out = append(out, component.OutputFile{Path: logDir, Mode: fs.ModeDir | 0o700})
	}
	return out, nil
}

func marshalYAML(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// etcd's configuration file, in etcd's own keys (go.etcd.io/etcd/server/v3
// embed.Config and its configJSON), read by `anvil etcd` through
// embed.ConfigFromFile.
type etcdConfigFile struct {
	Name                     string   `yaml:"name"`
	DataDir                  string   `yaml:"data-dir"`
	ListenClientURLs         string   `yaml:"listen-client-urls"`
	ListenClientHTTPURLs     string   `yaml:"listen-client-http-urls"`
	AdvertiseClientURLs      string   `yaml:"advertise-client-urls"`
	ListenPeerURLs           string   `yaml:"listen-peer-urls"`
	InitialAdvertisePeerURLs string   `yaml:"initial-advertise-peer-urls"`
	ListenMetricsURLs        string   `yaml:"listen-metrics-urls"`
	InitialCluster           string   `yaml:"initial-cluster"`
	InitialClusterState      string   `yaml:"initial-cluster-state"`
	InitialClusterToken      string   `yaml:"initial-cluster-token"`
	ClientTransportSecurity  etcdTLS  `yaml:"client-transport-security"`
	PeerTransportSecurity    etcdTLS  `yaml:"peer-transport-security"`
	TLSMinVersion            string   `yaml:"tls-min-version"`
	CipherSuites             []string `yaml:"cipher-suites"`
	QuotaBackendBytes        int64    `yaml:"quota-backend-bytes,omitempty"`
	SnapshotCount            uint64   `yaml:"snapshot-count,omitempty"`
	HeartbeatInterval        int64    `yaml:"heartbeat-interval,omitempty"` // ms
	ElectionTimeout          int64    `yaml:"election-timeout,omitempty"`   // ms
	Logger                   string   `yaml:"logger"`
	LogLevel                 string   `yaml:"log-level"`
	LogOutputs               []string `yaml:"log-outputs"`
}

// etcdTLS is etcd's securityConfig; the peer section uses the same keys
// (client-cert-auth there is what the command line calls
// --peer-client-cert-auth).
type etcdTLS struct {
	CertFile       string `yaml:"cert-file"`
	KeyFile        string `yaml:"key-file"`
	ClientCertAuth bool   `yaml:"client-cert-auth"`
	TrustedCAFile  string `yaml:"trusted-ca-file"`
	AutoTLS        bool   `yaml:"auto-tls"`
}

func etcdConfig(p Plan) etcdConfigFile {
	var peers []string
	for _, m := range p.Etcd.InitialCluster {
		peers = append(peers, m.Name+"="+m.PeerURL)
	}
	ca := p.cert(pki.EtcdCACertAndKeyBaseName)
	e := p.Cluster.Etcd
	return etcdConfigFile{
		Name:    p.Etcd.Name,
		DataDir: p.Root.EtcdData(),
		// Loopback for the local apiserver, the node's address for the
		// other masters' apiservers and for backups.
		ListenClientURLs: etcdLocalClientURL() + "," + p.EtcdClientURL(),
		// HTTP clients (the JSON gateway, /health) get a loopback port of
		// their own. Then the client port serves gRPC alone, through
		// gRPC's transport rather than net/http's: snapshots stream about
		// twice as fast and every request costs less.
		ListenClientHTTPURLs:     etcdLocalHTTPURL(),
		AdvertiseClientURLs:      p.EtcdClientURL(),
		ListenPeerURLs:           p.EtcdPeerURL(),
		InitialAdvertisePeerURLs: p.EtcdPeerURL(),
		// Health and metrics over plain HTTP on loopback only, for probes
		// that need no client certificate (as kubeadm does).
		ListenMetricsURLs:   etcdMetricsURL(),
		InitialCluster:      strings.Join(peers, ","),
		InitialClusterState: string(p.Etcd.State),
		InitialClusterToken: p.Etcd.Token,
		// Clients (the apiservers, backups) and peers must present a
		// certificate of the etcd CA, which signs nothing else, so a
		// Kubernetes client certificate gets no access to etcd. Never
		// auto-TLS: a self-signed certificate would authenticate no one.
		ClientTransportSecurity: etcdTLS{
			CertFile:       p.cert(pki.EtcdServerCertAndKeyBaseName),
			KeyFile:        p.key(pki.EtcdServerCertAndKeyBaseName),
			ClientCertAuth: true,
			TrustedCAFile:  ca,
		},
		PeerTransportSecurity: etcdTLS{
			CertFile:       p.cert(pki.EtcdPeerCertAndKeyBaseName),
			KeyFile:        p.key(pki.EtcdPeerCertAndKeyBaseName),
			ClientCertAuth: true,
			TrustedCAFile:  ca,
		},
		TLSMinVersion:     "TLS1.2",
		CipherSuites:      component.TLSCipherSuites(),
		QuotaBackendBytes: int64(e.QuotaBackendBytes),
		SnapshotCount:     e.SnapshotCount,
		HeartbeatInterval: e.HeartbeatInterval.Milliseconds(),
		ElectionTimeout:   e.ElectionTimeout.Milliseconds(),
		// Structured logs to stderr: the journal under systemd, the log
		// file under anvil's supervisor.
		Logger:     "zap",
		LogLevel:   "info",
		LogOutputs: []string{"stderr"},
	}
}

// The apiserver's configuration documents, written with local structs that
// follow k8s.io/apiserver v0.37.2 (pkg/apis/apiserver/v1 and audit/v1), so
// the main module does not depend on the apiserver. The apiserver decodes
// them strictly; the tests pin every key.

type typeMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

type authenticationConfiguration struct {
	typeMeta  `yaml:",inline"`
	Anonymous anonymousAuth `yaml:"anonymous"`
}

type anonymousAuth struct {
	Enabled    bool                 `yaml:"enabled"`
	Conditions []anonymousCondition `yaml:"conditions"`
}

type anonymousCondition struct {
	Path string `yaml:"path"`
}

// authenticationConfig allows anonymous requests only on exact paths: the
// health endpoints (for probes and load balancers) and the cluster-info
// ConfigMap, which a joining node reads before it has any credential and
// checks against the CA hash it was given. Anonymous conditions are served
// in apiserver.config.k8s.io/v1 from Kubernetes 1.34 on, no feature gate.
func authenticationConfig() authenticationConfiguration {
	var conds []anonymousCondition
	for _, p := range []string{"/livez", "/readyz", "/healthz", "/api/v1/namespaces/kube-public/configmaps/cluster-info"} {
		conds = append(conds, anonymousCondition{Path: p})
	}
	return authenticationConfiguration{
		typeMeta:  typeMeta{APIVersion: "apiserver.config.k8s.io/v1", Kind: "AuthenticationConfiguration"},
		Anonymous: anonymousAuth{Enabled: true, Conditions: conds},
	}
}

type auditPolicyDoc struct {
	typeMeta   `yaml:",inline"`
	OmitStages []string    `yaml:"omitStages,omitempty"`
	Rules      []auditRule `yaml:"rules"`
}

type auditRule struct {
	Level           string           `yaml:"level"`
	Users           []string         `yaml:"users,omitempty"`
	UserGroups      []string         `yaml:"userGroups,omitempty"`
	Verbs           []string         `yaml:"verbs,omitempty"`
	Resources       []auditResources `yaml:"resources,omitempty"`
	NonResourceURLs []string         `yaml:"nonResourceURLs,omitempty"`
}

type auditResources struct {
	Group     string   `yaml:"group"`
	Resources []string `yaml:"resources,omitempty"`
}

// auditPolicy records who changed what, and who read what secret material,
// without logging the bodies of objects that carry secrets and without the
// noise that would bury it (node heartbeats, events, health checks).
// Rules match in order; the first wins.
func auditPolicy() auditPolicyDoc {
	return auditPolicyDoc{
		typeMeta: typeMeta{APIVersion: "audit.k8s.io/v1", Kind: "Policy"},
		// Every request is logged when it completes; the RequestReceived
		// stage would only double the volume.
		OmitStages: []string{"RequestReceived"},
		Rules: []auditRule{
			// Probes and discovery, many times a second, carry nothing.
			{Level: "None", NonResourceURLs: []string{"/healthz*", "/livez*", "/readyz*", "/version", "/metrics"}},
			// Node heartbeats: every node renews its Lease every 10 s.
			{Level: "None", UserGroups: []string{"system:nodes"}, Verbs: []string{"get", "update", "patch"},
				Resources: []auditResources{{Group: "coordination.k8s.io", Resources: []string{"leases"}}}},
			// Leader election of the controller-manager and scheduler.
			{Level: "None", Users: []string{"system:kube-controller-manager", "system:kube-scheduler"},
				Verbs:     []string{"get", "update"},
				Resources: []auditResources{{Group: "coordination.k8s.io", Resources: []string{"leases"}}}},
			// Events are themselves a record.
			{Level: "None", Resources: []auditResources{{Group: "", Resources: []string{"events"}}, {Group: "events.k8s.io", Resources: []string{"events"}}}},
			// Secret-bearing objects and token requests: who and when, never
			// the body.
			{Level: "Metadata", Resources: []auditResources{
				{Group: "", Resources: []string{"secrets", "configmaps", "serviceaccounts/token"}},
				{Group: "authentication.k8s.io", Resources: []string{"tokenreviews"}},
				{Group: "certificates.k8s.io", Resources: []string{"certificatesigningrequests"}},
			}},
			// Reads are frequent and change nothing: who and what.
			{Level: "Metadata", Verbs: []string{"get", "list", "watch"}},
			// Every other change, with the request body.
			{Level: "Request"},
		},
	}
}

type schedulerConfigDoc struct {
	typeMeta                  `yaml:",inline"`
	ClientConnection          schedulerClientConnection `yaml:"clientConnection"`
	LeaderElection            schedulerLeaderElection   `yaml:"leaderElection"`
	EnableProfiling           bool                      `yaml:"enableProfiling"`
	EnableContentionProfiling bool                      `yaml:"enableContentionProfiling"`
}

type schedulerClientConnection struct {
	Kubeconfig string `yaml:"kubeconfig"`
}

type schedulerLeaderElection struct {
	LeaderElect bool `yaml:"leaderElect"`
}

// schedulerConfig is a KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1,
// k8s.io/kube-scheduler v0.37.2): the scheduler's flags for these settings
// are deprecated in favour of the file.
func schedulerConfig(p Plan) schedulerConfigDoc {
	return schedulerConfigDoc{
		typeMeta:         typeMeta{APIVersion: "kubescheduler.config.k8s.io/v1", Kind: "KubeSchedulerConfiguration"},
		ClientConnection: schedulerClientConnection{Kubeconfig: p.kubeconfig(pki.SchedulerKubeconfig)},
		LeaderElection:   schedulerLeaderElection{LeaderElect: true},
		// /debug/pprof exposes internals; off unless asked for.
		EnableProfiling:           false,
		EnableContentionProfiling: false,
	}
}

type encryptionConfiguration struct {
	typeMeta  `yaml:",inline"`
	Resources []encryptionResource `yaml:"resources"`
}

type encryptionResource struct {
	Resources []string             `yaml:"resources"`
	Providers []encryptionProvider `yaml:"providers"`
}

type encryptionProvider struct {
	AESGCM    *encryptionKeys `yaml:"aesgcm,omitempty"`
	AESCBC    *encryptionKeys `yaml:"aescbc,omitempty"`
	Secretbox *encryptionKeys `yaml:"secretbox,omitempty"`
	Identity  *struct{}       `yaml:"identity,omitempty"`
	KMS       *yaml.Node      `yaml:"kms,omitempty"`
}

type encryptionKeys struct {
	Keys []encryptionKey `yaml:"keys"`
}

type encryptionKey struct {
	Name   string `yaml:"name"`
	Secret string `yaml:"secret"`
}

// ErrEncryptionConfig marks an existing encryption configuration anvil
// cannot use and will not replace, since replacing it would make every
// Secret encrypted with it unreadable.
var ErrEncryptionConfig = errors.New("unusable encryption configuration")

// encryptionConfig returns the existing encryption configuration unchanged
// if there is one, or a new one with a fresh secretbox key.
func encryptionConfig(read ReadFunc) ([]byte, error) {
	old, err := read(EncryptionConfigFile)
	switch {
	case err == nil:
		if err := CheckEncryptionConfig(old); err != nil {
			return nil, fmt.Errorf("%s: %w: %w (fix or remove it by hand)", EncryptionConfigFile, ErrEncryptionConfig, err)
		}
		return old, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read %s: %w", EncryptionConfigFile, err)
	}
	key := make([]byte, 32) // secretbox (XSalsa20-Poly1305) takes a 256-bit key
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate encryption key: %w", err)
	}
	doc := encryptionConfiguration{
		typeMeta: typeMeta{APIVersion: "apiserver.config.k8s.io/v1", Kind: "EncryptionConfiguration"},
		Resources: []encryptionResource{{
			Resources: []string{"secrets"},
			Providers: []encryptionProvider{
				// The first provider encrypts every write.
				{Secretbox: &encryptionKeys{Keys: []encryptionKey{{Name: "key1", Secret: base64.StdEncoding.EncodeToString(key)}}}},
				// identity still reads what was stored before encryption was on.
				{Identity: &struct{}{}},
			},
		}},
	}
	return marshalYAML(doc)
}

// CheckEncryptionConfig accepts a configuration whose first provider for
// secrets encrypts (an operator may have rotated keys or moved to KMS).
func CheckEncryptionConfig(b []byte) error {
	var doc encryptionConfiguration
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	if doc.Kind != "EncryptionConfiguration" || !strings.HasPrefix(doc.APIVersion, "apiserver.config.k8s.io/") {
		return fmt.Errorf("not an EncryptionConfiguration (apiVersion %q, kind %q)", doc.APIVersion, doc.Kind)
	}
	for _, r := range doc.Resources {
		for _, name := range r.Resources {
			if name != "secrets" && name != "*.*" && name != "*." {
				continue
			}
			if len(r.Providers) == 0 || r.Providers[0].Identity != nil {
				return errors.New("secrets are not encrypted: the first provider is identity")
			}
			return nil
		}
	}
	return errors.New("no entry covers secrets")
}
