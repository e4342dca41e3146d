package installer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/progress"
)

// Defaults for the zero values of Options and ApplyOptions.
const (
	// DefaultConcurrency bounds how many hosts are worked on at once. SSH
	// sessions are cheap; what it limits is the workstation's upload
	// bandwidth and CPU (encryption) being split too thin.
	DefaultConcurrency = 10
	// DefaultTimeout bounds each of init, one join, and the wait for every
	// Node to become Ready.
	DefaultTimeout = 10 * time.Minute
	// DefaultTokenTTL is the lifetime of the join tokens an apply makes,
	// one per joining host: long enough for one join, short enough to be
	// useless soon after should its deletion fail.
	DefaultTokenTTL = 15 * time.Minute
	// DefaultConnectTimeout bounds one SSH connection attempt.
	DefaultConnectTimeout = 15 * time.Second
	// connectAttempts is how often a connection that failed for a reason
	// that may pass is tried.
	connectAttempts = 3
)

// Options are what every cluster command needs to reach the hosts.
type Options struct {
	// ClusterFile is the cluster file's path; the kubeconfig is written
	// beside it by default.
	ClusterFile string
	// Cluster is the loaded file (v1alpha1.Load); nil means load
	// ClusterFile.
	Cluster *v1alpha1.Cluster
	// AgentSocket is ssh-agent's socket (SSH_AUTH_SOCK); empty means no
	// agent, so every host needs an identity file.
	AgentSocket string
	// AcceptNewHostKeys adds the key of a host missing from known_hosts to
	// that file instead of refusing it. A key that differs from the recorded
	// one is refused regardless.
	AcceptNewHostKeys bool
	// Concurrency bounds how many hosts are worked on at once.
	Concurrency int
	// ConnectTimeout bounds one SSH connection attempt.
	ConnectTimeout time.Duration
	// Log gets details; nil discards them.
	Log *slog.Logger
	// Progress is what the person at the terminal sees; nil shows nothing.
	// The caller closes it (which prints the summary table).
	Progress *progress.Reporter
}

// ApplyOptions are the inputs of Apply.
type ApplyOptions struct {
	Options
	// DryRun connects and gathers facts, then plans and changes nothing
	// anywhere (ApplyResult.WritePlan prints the plan).
	DryRun bool
	// Rollback allows a kubernetesVersion one minor below what the masters
	// run: undoing an upgrade (see the upgrade phase).
	Rollback bool
	// Force upgrades the reachable masters while a master is down (etcd
	// keeps its quorum only if every other member answers while each
	// restarts).
	Force bool
	// Anvil is the anvil binary installed on every host (usually
	// os.Executable()).
	Anvil string
	// KubeDirs are searched in order for <version>/ holding the component
	// binaries and their manifest.json (what `make kube` builds into
	// bin/kube).
	KubeDirs []string
	// Kubeconfig is where the admin kubeconfig is written; empty means
	// DefaultKubeconfigPath(ClusterFile).
	Kubeconfig string
	// Timeout bounds init, each join, and the wait for Ready Nodes.
	Timeout time.Duration
	// TokenTTL is the lifetime of the join tokens this run makes
	// (DefaultTokenTTL when zero; at most master.MaxTokenTTL).
	TokenTTL time.Duration
	// CacheDir keeps the compressed binaries between runs; empty means the
	// user's cache directory.
	CacheDir string

	// secretSeen, set by tests, is told every secret the run handles (join
	// tokens, certificate keys), to look for them where they must never
	// show.
	secretSeen func(secret string)
}

// DefaultKubeconfigPath is where apply writes the admin kubeconfig for a
// cluster file: beside it, named after it ("lab.yaml" → "lab.kubeconfig").
func DefaultKubeconfigPath(clusterFile string) string {
	base := strings.TrimSuffix(filepath.Base(clusterFile), filepath.Ext(clusterFile))
	return filepath.Join(filepath.Dir(clusterFile), base+".kubeconfig")
}

func (o *Options) complete() error {
	if o.Cluster == nil {
		if o.ClusterFile == "" {
			return errors.New("no cluster file")
		}
		c, _, err := v1alpha1.Load(o.ClusterFile)
		if err != nil {
			return fmt.Errorf("cluster file %s: %w", o.ClusterFile, err)
		}
		o.Cluster = c
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = progress.New(io.Discard, progress.Options{})
	}
	return nil
}
