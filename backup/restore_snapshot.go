package backup

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/component"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// The snapshot restore's own phases: check, verify the whole backup into a
// staging directory, restore the data with etcd's code, swap it in, start.

func restoreCheckPhase(ctx context.Context, r *restoreRun) error {
	if err := r.readNode(); err != nil {
		return err
	}
	// A member of a multi-member cluster restored alone would fork it.
	ms := r.readMembership(ctx)
	r.result.Members = ms
	if why := soloRestoreRefusal(ms, r.etcdCfg.Name, r.masterNames()); why != "" && !r.o.Force {
		return r.refuse(true, "%s", why)
	}
	return nil
}

// checkHeader refuses, from the clear header alone, a backup this master
// must not take: before any decryption and before anything changes.
func (r *restoreRun) checkHeader(h *envelope.BackupHeader) error {
	if _, err := images.Lookup(h.KubernetesVersion); err != nil {
		return r.refuse(false, "it is of Kubernetes %s, which this anvil cannot run: %v", h.KubernetesVersion, err)
	}
	if h.Cluster != r.cluster.Name && !r.o.Force {
		return r.refuse(true, "it is a backup of cluster %q, and this master belongs to cluster %q", h.Cluster, r.cluster.Name)
	}
	if h.KubernetesVersion != r.state.KubernetesVersion && !r.o.Force {
		return r.refuse(true, "it was taken under Kubernetes %s and this master runs %s", h.KubernetesVersion, r.state.KubernetesVersion)
	}
	if h.CACertHash != r.caHash {
		return r.refuse(false, "its cluster CA (%s) is not this master's (%s): its certificates, service-account tokens and Secrets belong to another cluster (or the CA was replaced). Restore it onto a machine cleaned with anvil reset and initialised from the backup's cluster file", h.CACertHash, r.caHash)
	}
	return nil
}

func restoreVerifyPhase(ctx context.Context, r *restoreRun) error {
	parent := filepath.Dir(r.dataDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return err
	}
	staging, err := os.MkdirTemp(parent, "restore-staging-")
	if err != nil {
		return err
	}
	r.staging = staging
	r.stagedDB = filepath.Join(staging, "snapshot.db")
	db, err := os.OpenFile(r.stagedDB, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer db.Close()
	trailer := envelope.NewSnapshotTrailer()
	r.stagedFiles = map[string][]byte{}
	contents, err := envelope.ReadEnvelope(r.o.Backup, envelope.ReadOptions{
		Identities:  r.o.Keys.Identities,
		Trust:       r.o.Keys.Trust,
		CheckHeader: r.checkHeader,
		File: func(p string, _ fs.FileMode, data []byte) error {
			r.stagedFiles["/"+p] = data
			return nil
		},
		Snapshot: io.MultiWriter(db, trailer),
	})
	if err != nil {
		var refused *RestoreRefusedError
		if errors.As(err, &refused) {
			return err
		}
		return fmt.Errorf("%s: %w", r.o.Name, err)
	}
	if err := db.Sync(); err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	r.header = contents.Header
	r.result.Header = &r.header
	if err := trailer.Check(); err != nil {
		return fmt.Errorf("%s: %w", r.o.Name, envelope.NewError(envelope.ErrCorruptBackup, "snapshot", "%v", err))
	}
	if err := checkCarriedFiles(r.stagedFiles, &contents.Header); err != nil {
		return fmt.Errorf("%s: %w", r.o.Name, err)
	}
	if err := r.checkFiles(); err != nil {
		return err
	}
	if r.snapRevision, err = dbRevision(r.stagedDB, time.Second); err != nil {
		return fmt.Errorf("%s: %w", r.o.Name, envelope.NewError(envelope.ErrCorruptBackup, "snapshot", "the snapshot is not an etcd database: %v", err))
	}
	r.result.SnapshotRevision = r.snapRevision
	r.o.Task.Say("%s is a complete backup of cluster %s taken on %s at %s, revision %d (snapshot %s, sha256 %s…)",
		r.o.Name, contents.Header.Cluster, contents.Header.Node, contents.Header.Created.Format(time.RFC3339), r.snapRevision,
		human.Bytes(contents.SnapshotSize), contents.SnapshotSHA256[:16])
	if r.o.DryRun {
		// What the restore would do if the cluster stopped now.
		r.result.ServedRevision = r.liveRevision(ctx)
		bump := revisionBump(r.snapRevision, r.result.ServedRevision, r.o.MinRevision)
		r.result.RevisionBump, r.result.Revision = bump, r.snapRevision+int64(bump)
	}
	return nil
}

// checkFiles compares the backup's files with this master's: the CAs and
// the service-account keys must be the same (everything here was issued
// from them), the encryption config is replaced by the backup's if it
// differs (the snapshot's Secrets are encrypted with it), and a different
// cluster file is kept and noted.
func (r *restoreRun) checkFiles() error {
	for _, f := range BackupFiles() {
		want := r.stagedFiles[f]
		have, err := os.ReadFile(r.o.Root.Path(f))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err == nil && bytes.Equal(have, want) {
			continue
		}
		switch f {
		case master.EncryptionConfigFile:
			if err := master.CheckEncryptionConfig(want); err != nil {
				return fmt.Errorf("%s: %w", r.o.Name, envelope.NewError(envelope.ErrCorruptBackup, "file", "%s: %v", f, err))
			}
		case master.ClusterFile:
			r.result.Notes = append(r.result.Notes, fmt.Sprintf("the backup's cluster file differs from %s, which is kept", r.o.Root.Path(f)))
		default:
			return r.refuse(false, "its %s differs from this master's: restore it onto a machine cleaned with anvil reset", f)
		}
	}
	return nil
}

func restoreDataPhase(ctx context.Context, r *restoreRun) error {
	bump := revisionBump(r.snapRevision, r.served, r.o.MinRevision)
	r.result.RevisionBump = bump
	r.result.Revision = r.snapRevision + int64(bump)
	r.newDir = filepath.Join(filepath.Dir(r.dataDir), filepath.Base(r.dataDir)+".restore-"+r.stamp)
	var peers []string
	for _, u := range r.etcdCfg.AdvertisePeerUrls {
		peers = append(peers, u.String())
	}
	var initial []string
	for _, u := range peers {
		initial = append(initial, r.etcdCfg.Name+"="+u)
	}
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        r.stagedDB,
		Name:                r.etcdCfg.Name,
		OutputDataDir:       r.newDir,
		PeerURLs:            peers,
		InitialCluster:      strings.Join(initial, ","),
		InitialClusterToken: r.etcdCfg.InitialClusterToken,
		RevisionBump:        bump,
		MarkCompacted:       true,
	})
	if err != nil {
		return fmt.Errorf("etcd snapshot restore into %s: %w", r.newDir, err)
	}
	if err := os.Chmod(r.newDir, 0o700); err != nil {
		return err
	}
	r.o.Task.Say("revision %d bumped by %d to %d (this member had served up to %d), marked compacted",
		r.snapRevision, bump, r.result.Revision, r.served)
	return nil
}

func restoreSwapPhase(ctx context.Context, r *restoreRun) error {
	aside := filepath.Join(filepath.Dir(r.dataDir), "before-restore-"+r.stamp)
	if err := os.Mkdir(aside, 0o700); err != nil {
		return err
	}
	r.result.Aside = aside
	oldData := filepath.Join(aside, filepath.Base(r.dataDir))
	if err := os.Rename(r.dataDir, oldData); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("move %s aside: %w", r.dataDir, err)
	}
	if err := os.Rename(r.newDir, r.dataDir); err != nil {
		if rerr := os.Rename(oldData, r.dataDir); rerr != nil {
			return fmt.Errorf("put the restored data in place: %w; and the old data could not be put back from %s: %v", err, oldData, rerr)
		}
		return fmt.Errorf("put the restored data in place: %w", err)
	}
	r.swapped = true
	r.newDir = ""
	// The encryption config the snapshot's Secrets need.
	f := master.EncryptionConfigFile
	want := r.stagedFiles[f]
	have, err := os.ReadFile(r.o.Root.Path(f))
	if err == nil && !bytes.Equal(have, want) {
		if err := fsutil.WriteFile(filepath.Join(aside, "files", f), have, 0o600, 0o700); err != nil {
			return err
		}
	}
	if err != nil || !bytes.Equal(have, want) {
		if err := fsutil.WriteFile(r.o.Root.Path(f), want, carriedFileMode, 0o700); err != nil {
			return err
		}
		r.result.Replaced = append(r.result.Replaced, r.o.Root.Path(f))
	}
	return nil
}

func restoreStartPhase(ctx context.Context, r *restoreRun) error {
	member := r.components(master.Etcd)
	if err := r.start(ctx, member); err != nil {
		return err
	}
	if err := r.cp.WaitReady(ctx, member, r.o.Timeout); err != nil {
		return err
	}
	if err := r.dropLeaderLeases(ctx); err != nil {
		return err
	}
	var rest []component.Spec
	for _, c := range r.stopped {
		if c.Name != master.Etcd {
			rest = append(rest, c)
		}
	}
	if err := r.start(ctx, rest); err != nil {
		return err
	}
	if err := r.cp.WaitReady(ctx, r.cs, r.o.Timeout); err != nil {
		return err
	}
	if err := r.cp.WaitLeaders(ctx, r.o.Timeout); err != nil {
		return err
	}
	r.o.Task.Say("control plane ready after %s down; the old data is in %s", time.Since(r.downSince).Round(10*time.Millisecond), r.result.Aside)
	return nil
}

// dropLeaderLeases deletes the controller-manager's, the scheduler's and
// the VIP's leader leases from the restored data. They name holders from the time of
// the backup, and a new holder would wait out their whole duration; every
// holder is stopped during a restore, so nobody can still be acting on them.
func (r *restoreRun) dropLeaderLeases(ctx context.Context) error {
	prefix := "/registry"
	for _, c := range r.cs {
		if v, ok := c.Arg("etcd-prefix"); ok && c.Name == master.APIServer {
			prefix = v
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cli, err := etcd.Dial(ctx, r.o.Root)
	if err != nil {
		return err
	}
	defer cli.Close()
	for _, name := range []string{master.ControllerManager, master.Scheduler, master.VIPLease} {
		key := path.Join(prefix, "leases", "kube-system", name)
		if _, err := cli.Delete(ctx, key); err != nil {
			return fmt.Errorf("delete stale leader lease %s: %w", key, err)
		}
	}
	return nil
}

// caHashOfPEM is the CA pin of a PEM certificate.
func caHashOfPEM(b []byte) (string, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", err
	}
	return pki.CAHashOf(cert).String(), nil
}
