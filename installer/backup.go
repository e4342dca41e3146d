package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/images"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/human"
)

// `anvil cluster backup`: the snapshot is taken on the etcd leader (the
// member every other one follows; snapshotting it costs the followers
// nothing), streamed back on the SSH session's stdout into a temporary
// file here and verified, its signature first: against the key the cluster
// file pins, else the one the master reports holding. The local file
// appears, 0600, only once it has been verified; nothing is written on the
// masters.

// backupPhases is `anvil cluster backup`, top to bottom.
func backupPhases(b *backupState) []flowPhase {
	return []flowPhase{
		looking("connect", planConnect), // connect.go
		looking("facts", planFacts),     // facts.go, with `anvil status -o json`
		looking("backup", b.planLeader), // backup.go
	}
}

// anvilOnHost is the anvil a node's components run.
const anvilOnHost = hostfs.LinkDir + "/" + images.AnvilBinary

// BackupOptions are the inputs of Backup.
type BackupOptions struct {
	Options
	// Output is the local file. Empty means a new file named as the
	// masters name theirs (backup.BackupName) in the current directory; a
	// directory means a new file in it; "-" streams the backup to Stdout.
	Output string
	Stdout io.Writer
	// Identities let the verification read an encrypted backup's content
	// too; without them only its header and the payload's framing are
	// checked.
	Identities []age.Identity
	// AllowUnencrypted lets the master write a backup without recipients
	// (anvil backup --allow-unencrypted).
	AllowUnencrypted bool
}

// BackupResult is what a cluster backup wrote.
type BackupResult struct {
	// Host is the master the snapshot was taken on.
	Host   string                `json:"host"`
	Path   string                `json:"path,omitempty"`
	Header envelope.BackupHeader `json:"header"`
	Bytes  int64                 `json:"bytes"`
	// Verified says every layer was checked; else only the header and the
	// payload's framing (an encrypted backup without its identity).
	Verified bool          `json:"verified"`
	Elapsed  time.Duration `json:"elapsed"`
}

// backupState is what a cluster backup carries between its phases.
type backupState struct {
	o      BackupOptions
	result *BackupResult
}

// mastersOnly narrows a run to the cluster's masters: backups and restores
// never touch a worker, and a worker that is down must not stop them.
func (r *run) mastersOnly() {
	var ms []*host
	for _, h := range r.hosts {
		if h.IsMaster() {
			ms = append(ms, h)
		} else {
			h.task.Skip("connect", "a worker: backups and restores concern the masters")
			h.task.Finish()
		}
	}
	r.hosts = ms
}

// Backup takes a backup of the cluster in o on its etcd leader and writes
// it, verified, on this machine.
func Backup(ctx context.Context, o BackupOptions) (*BackupResult, error) {
	r, err := newRun(o.Options)
	if err != nil {
		return nil, err
	}
	defer r.close()
	r.mastersOnly()
	if len(r.hosts) == 0 {
		return nil, errors.New("the cluster file names no master")
	}
	r.factsReq = factsRequest{version: r.cluster.KubernetesVersion, status: true}
	b := &backupState{o: o}
	start := time.Now()
	err = r.do(ctx, "backup", backupPhases(b))
	res := b.result
	if res != nil {
		res.Elapsed = time.Since(start)
	}
	if res == nil && err == nil {
		err = errors.New("no master could take the backup")
	}
	return res, err
}

// backupSource picks the master to take the snapshot on: the etcd leader
// as the masters' status reports it, else the first master whose control
// plane is healthy.
func backupSource(r *run) (*host, string) {
	var leader string
	for _, h := range r.alive() {
		if st := h.facts.Status; st != nil && st.Etcd != nil && st.Etcd.Leader != "" {
			leader = st.Etcd.Leader
			break
		}
	}
	for _, h := range r.alive() {
		if h.facts.ControlPlane() && h.Name == leader {
			return h, "the etcd leader"
		}
	}
	for _, h := range r.alive() {
		if h.facts.ControlPlane() && h.facts.Status != nil && h.facts.Status.Healthy {
			return h, "a healthy master (no etcd leader was reported)"
		}
	}
	return nil, ""
}

func (b *backupState) planLeader(r *run) plan {
	var pl plan
	src, why := backupSource(r)
	for _, h := range r.alive() {
		if h != src {
			pl.steps = append(pl.steps, step{host: h, do: "nothing to do: the snapshot is taken on " + nameOf(src)})
			continue
		}
		pl.steps = append(pl.steps, step{host: h, do: "anvil backup -o - on " + why + ", streamed here and verified as it arrives", run: func(ctx context.Context) (string, error) {
			return b.stream(ctx, r, h)
		}})
	}
	if src == nil && len(r.alive()) > 0 {
		h := r.alive()[0]
		pl.steps = append(pl.steps[:0], step{host: h, do: "find a master to take the backup on", run: func(context.Context) (string, error) {
			return "", errors.New("no master runs a healthy control plane (anvil status): nothing to take a backup from")
		}})
	}
	return pl
}

func nameOf(h *host) string {
	if h == nil {
		return "no master"
	}
	return h.Name
}

// stream runs `anvil backup -o -` on h into a temporary file, verifies
// that file (its signature first), and only then renames it into place
// (or copies it to Stdout): nothing unverified reaches the destination.
func (b *backupState) stream(ctx context.Context, r *run, h *host) (string, error) {
	start := time.Now()
	trust, note, err := backupTrust(r.cluster, []*host{h}, false)
	if err != nil {
		return "", err
	}
	dst, err := openBackupDest(b.o.Output, b.o.Stdout)
	if err != nil {
		return "", err
	}
	defer dst.discard()
	cw := &countWriter{w: dst.tmp}
	cmd := anvilOnHost + " backup -o - --log-format json"
	if b.o.AllowUnencrypted {
		cmd += " --allow-unencrypted"
	}
	if err := r.runLogged(ctx, h, "anvil backup", cmd, nil, cw); err != nil {
		return "", err
	}
	if _, err := dst.tmp.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	v, err := envelope.VerifyBackup(dst.tmp, b.o.Identities, trust)
	if err != nil {
		return "", fmt.Errorf("the backup from %s does not verify: %w", h.Name, err)
	}
	hd := v.Header
	out := &BackupResult{Host: h.Name, Header: hd, Bytes: cw.n, Verified: v.Contents != nil}
	if out.Path, err = dst.commit(hd); err != nil {
		return "", err
	}
	b.result = out
	what := "verified"
	if !out.Verified {
		what = "encrypted: header, signature and framing verified (give --identity to verify the content)"
	}
	secs := time.Since(start).Seconds()
	return fmt.Sprintf("revision %d, %s in %.1fs (%.0f MB/s), %s, signed by %s%s", hd.Revision, human.Bytes(cw.n), secs,
		float64(cw.n)/1e6/max(secs, 1e-9), what, hd.SigningKey, note), nil
}

// backupTrust is whose signature a backup must carry on this machine: the
// key the cluster file pins in backup.signingPublicKey; without a pin,
// the keys the masters report holding (anvil status over SSH, whose host
// keys are checked), with a note that says so.
func backupTrust(c *v1alpha1.Cluster, masters []*host, allowUnsigned bool) (envelope.Trust, string, error) {
	if pin := c.Backup.SigningPublicKey; pin != "" {
		t, err := envelope.TrustKeys(pin)
		t.AllowUnsigned = allowUnsigned
		return t, "", err
	}
	var keys, names []string
	for _, h := range masters {
		if st := h.facts.Status; st != nil && st.BackupSigningKey != "" && !slices.Contains(keys, st.BackupSigningKey) {
			keys = append(keys, st.BackupSigningKey)
			names = append(names, h.Name)
		}
	}
	if len(keys) == 0 && !allowUnsigned {
		return envelope.Trust{}, "", errors.New("no backup signing key to check backups against: the cluster file pins none " +
			"(backup.signingPublicKey) and no master reported one (anvil status)")
	}
	t, err := envelope.TrustKeys(keys...)
	t.AllowUnsigned = allowUnsigned
	note := fmt.Sprintf(" (the key %s holds; pin it as backup.signingPublicKey in the cluster file)", strings.Join(names, ", "))
	return t, note, err
}

// backupDest is where a streamed backup goes: a temporary file beside its
// destination that is renamed into place once the backup verified, or,
// for Stdout, one in the temporary directory that is copied to Stdout
// then.
type backupDest struct {
	tmp *os.File
	// stdout is set when the backup goes there.
	stdout io.Writer
	// output is BackupOptions.Output; dir is where the file goes, and
	// toDir says output names a directory, so the file is named after
	// the backup.
	output string
	dir    string
	toDir  bool
}

func openBackupDest(output string, stdout io.Writer) (*backupDest, error) {
	d := &backupDest{output: output, dir: "."}
	switch {
	case output == "-":
		d.stdout, d.dir = stdout, os.TempDir()
	case output != "":
		fi, err := os.Stat(output)
		d.toDir = err == nil && fi.IsDir() || strings.HasSuffix(output, "/")
		d.dir = filepath.Dir(output)
		if d.toDir {
			d.dir = output
		}
	}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(d.dir, ".anvil-backup-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("backup file: %w", err)
	}
	d.tmp = f
	if err := f.Chmod(0o600); err != nil {
		d.discard()
		return nil, err
	}
	return d, nil
}

// discard removes the temporary file of a backup that was not committed.
func (d *backupDest) discard() {
	if d.tmp != nil {
		d.tmp.Close()
		os.Remove(d.tmp.Name())
		d.tmp = nil
	}
}

// commit renames the temporary file into place, under the backup's own
// name when no file name was given, and returns the path; for Stdout it
// copies the file there and returns "".
func (d *backupDest) commit(hd envelope.BackupHeader) (string, error) {
	if d.stdout != nil {
		if _, err := d.tmp.Seek(0, io.SeekStart); err != nil {
			return "", err
		}
		if _, err := io.Copy(d.stdout, d.tmp); err != nil {
			return "", fmt.Errorf("backup to stdout: %w", err)
		}
		return "", nil
	}
	if err := d.tmp.Sync(); err != nil {
		return "", err
	}
	if err := d.tmp.Close(); err != nil {
		return "", err
	}
	final := d.output
	if final == "" || d.toDir {
		final = filepath.Join(d.dir, backup.BackupName(hd.Cluster, hd.Node, hd.Created))
	}
	if err := os.Rename(d.tmp.Name(), final); err != nil {
		return "", fmt.Errorf("backup file: %w", err)
	}
	d.tmp = nil
	// The rename itself survives a crash once the directory is synced.
	if dir, err := os.Open(filepath.Dir(final)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return final, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// checkBackupForCluster refuses, from its verified header, a backup the
// cluster file's cluster must not get: another cluster's (unless force)
// or one of a Kubernetes version anvil cannot run.
func checkBackupForCluster(c *v1alpha1.Cluster, h envelope.BackupHeader, force bool) error {
	if _, err := images.Lookup(h.KubernetesVersion); err != nil {
		return fmt.Errorf("the backup is of Kubernetes %s, which this anvil cannot run: %w", h.KubernetesVersion, err)
	}
	if h.Cluster != c.Name && !force {
		return fmt.Errorf("the backup is of cluster %q and the cluster file's is %q (--force restores it anyway)", h.Cluster, c.Name)
	}
	return nil
}

// errNotABackupFile is returned for a path that is not a regular file.
var errNotABackupFile = errors.New("not a regular file")

func openBackupFile(p string) (*os.File, fs.FileInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("backup: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errNotABackupFile
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("backup %s: %w", p, err)
	}
	return f, fi, nil
}
