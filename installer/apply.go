package installer

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// applyPhases is `anvil cluster apply`, top to bottom. Each phase decides
// from the facts what to do on each host before doing anything, so a
// second apply over an unchanged cluster does nothing, and --dry-run
// prints exactly those decisions.
func applyPhases() []flowPhase {
	return []flowPhase{
		looking("connect", planConnect),                 // connect.go: SSH, host keys, bastion, sudo
		looking("facts", planFacts),                     // facts.go: OS, addresses, clock, ports, what is installed
		looking("validate", planValidate),               // validate.go: ports, duplicates, clock skew, roles
		changing("upload", planUpload),                  // upload.go: binaries by sha256, zstd, atomic
		changing("upgrade", planUpgrade),                // upgrade.go: masters to the file's version, one at a time
		changing("init", planInit),                      // init.go: the first master
		changing("join-masters", planJoinMasters),       // join_masters.go: other masters, one at a time
		changing("join-workers", planJoinWorkers),       // join_workers.go: workers, in parallel
		changing("upgrade-workers", planUpgradeWorkers), // upgrade.go: workers to the file's version, drained, in batches
		changing("credentials", planCredentials),        // credentials.go: delete what the run made and left: certificates, tokens
		changing("ready", planReady),                    // ready.go: every Node Ready
		changing("addons", planAddons),                  // addons.go: cluster DNS applied again if it drifted
		changing("kubeconfig", planKubeconfig),          // kubeconfig.go: the admin kubeconfig here
	}
}

// ApplyResult is what an apply did.
type ApplyResult struct {
	// Plan is every step, with Change set for the ones that change
	// something: what a dry run printed, or what a real run decided.
	Plan []PlannedStep `json:"plan"`
	// BytesUploaded is what went over the wire (compressed).
	BytesUploaded int64 `json:"bytesUploaded"`
	// DeletedTokens are the IDs of the join tokens the run made and
	// deleted once its joins were over.
	DeletedTokens []string `json:"deletedTokens,omitempty"`
	// Kubeconfig is the admin kubeconfig written on the workstation.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// BackupSigningKey is the key the masters sign backups with, as the
	// first master holds it (ed25519:…); Pinned says the cluster file pins
	// it in backup.signingPublicKey.
	BackupSigningKey string        `json:"backupSigningKey,omitempty"`
	Pinned           bool          `json:"backupSigningKeyPinned,omitempty"`
	Elapsed          time.Duration `json:"elapsed"`
	cluster          *v1alpha1.Cluster
}

// applyState is what an apply carries from phase to phase beyond the
// hosts' facts.
type applyState struct {
	o          ApplyOptions
	bundle     *bundle
	compressor *compressor
	uploaded   atomic.Int64
	// clusterFile is what init gets: the operator's file as written.
	clusterFile []byte
	// certificateKey decrypts the certificates the run uploaded for the
	// masters it joins; empty until the first of those joins.
	certificateKey string
	// made are the bootstrap credentials the run made, which the
	// credentials phase deletes.
	made credentials
	// becameReady counts the hosts whose Node the ready phase found not
	// yet Ready (or not yet registered) and waited for: a node that
	// joined in an earlier, interrupted run shows up here, not as a join.
	becameReady atomic.Int32
	// upgraded are the masters the upgrade phase switched to the file's
	// version (by name), which the workers wait for.
	upgraded sync.Map
}

func (a *applyState) addUploaded(n int64) { a.uploaded.Add(n) }

// handled notes a secret the run holds (for tests; see
// ApplyOptions.secretSeen).
func (a *applyState) handled(secret string) {
	if a.o.secretSeen != nil && secret != "" {
		a.o.secretSeen(secret)
	}
}

// Apply provisions the cluster in o.Cluster on its hosts.
func Apply(ctx context.Context, o ApplyOptions) (*ApplyResult, error) {
	start := time.Now()
	if o.TokenTTL == 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if err := master.CheckTokenTTL(o.TokenTTL); err != nil {
		return nil, fmt.Errorf("join tokens: %w", err)
	}
	r, err := newRun(o.Options)
	if err != nil {
		return nil, err
	}
	defer r.close()
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Kubeconfig == "" && o.ClusterFile != "" {
		o.Kubeconfig = DefaultKubeconfigPath(o.ClusterFile)
	}
	o.Options = r.o
	r.dryRun = o.DryRun
	b, err := loadBundle(o.Anvil, o.KubeDirs, r.cluster.KubernetesVersion)
	if err != nil {
		return nil, err
	}
	b.addArchives(r.cluster.Images, o.ClusterFile)
	comp, err := newCompressor(o.CacheDir)
	if err != nil {
		return nil, err
	}
	cf, err := clusterFileBytes(o.Options)
	if err != nil {
		return nil, err
	}
	r.apply = &applyState{o: o, bundle: b, compressor: comp, clusterFile: cf}
	r.factsReq = b.factsRequest()
	r.factsReq.status, r.factsReq.updateCache, r.factsReq.kernel = true, !o.DryRun, true

	err = r.do(ctx, "apply", applyPhases())
	res := &ApplyResult{Plan: r.planned, BytesUploaded: r.apply.uploaded.Load(), DeletedTokens: r.apply.made.deleted(), Elapsed: time.Since(start), cluster: r.cluster}
	if !o.DryRun && r.primary != nil && !r.primary.failed() && o.Kubeconfig != "" {
		res.Kubeconfig = o.Kubeconfig
	}
	if err == nil && !o.DryRun && r.primary != nil && r.primary.client != nil {
		res.BackupSigningKey, res.Pinned = backupSigningKey(ctx, r)
	}
	return res, err
}

// backupSigningKey reads the key the first master signs backups with.
func backupSigningKey(ctx context.Context, r *run) (string, bool) {
	b, err := r.primary.client.OutputAsRoot(ctx, "cat "+path.Join(hostfs.PKIDir, pki.BackupSigningPubKeyName))
	if err != nil {
		r.log.Warn("read the backup signing key", "host", r.primary.Name, "err", err)
		return "", false
	}
	k, err := pki.ParsePublicKey(b)
	pub, ok := k.(ed25519.PublicKey)
	if err != nil || !ok {
		r.log.Warn("read the backup signing key", "host", r.primary.Name, "err", err)
		return "", false
	}
	key := envelope.FormatSigningKey(pub)
	return key, key == r.cluster.Backup.SigningPublicKey
}

// WritePlan prints the plan per host, in the cluster file's order.
func (res *ApplyResult) WritePlan(w io.Writer) { writePlan(w, res.cluster, res.Plan) }

// clusterFileBytes is the cluster file as the operator wrote it, for
// init to keep on the first master.
func clusterFileBytes(o Options) ([]byte, error) {
	if o.ClusterFile != "" {
		b, err := os.ReadFile(o.ClusterFile)
		if err != nil {
			return nil, fmt.Errorf("read cluster file: %w", err)
		}
		return b, nil
	}
	return yaml.Marshal(o.Cluster)
}
