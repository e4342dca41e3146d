package backup

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/buildinfo"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/internal/progress"
	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// BackupFileExt ends the name of every backup anvil writes; list and prune
// look only at files with it.
const BackupFileExt = ".anvilbak"

// UnencryptedWarning is said before every backup without recipients that
// was allowed (--allow-unencrypted, backup.allowUnencrypted).
const UnencryptedWarning = "WARNING: this backup is NOT encrypted. It holds the cluster's CA keys, the service-account signing key " +
	"and the key Secrets are encrypted with in etcd: whoever reads it owns the cluster. It is written 0600; " +
	"set backup.recipients in the cluster file (age public keys) to encrypt every backup."

// ErrUnencrypted refuses a backup that would have no recipients when
// neither --allow-unencrypted nor backup.allowUnencrypted allows one.
var ErrUnencrypted = errors.New("refusing to write a backup that is not encrypted: it would hold the cluster's CA keys, " +
	"the service-account key and the Secrets encryption key in the clear. Set backup.recipients in the cluster file " +
	"(age public keys; anvil config init makes a key pair), give --recipient, or allow it with --allow-unencrypted " +
	"(backup.allowUnencrypted: true for the scheduled backups)")

// BackupFiles are the files a backup carries besides the snapshot, as host
// paths: what rebuilding a master needs that the snapshot does not hold and
// that cannot be made again — the CAs and their keys (every other
// certificate and kubeconfig is issued from them), the service-account key
// pair (tokens in the snapshot are signed with it), the encryption
// configuration (Secrets in the snapshot are encrypted with it) and the
// cluster file (everything else is rendered from it).
func BackupFiles() []string {
	pkiFile := func(name string) string { return path.Join(hostfs.PKIDir, name) }
	files := []string{
		master.ClusterFile,
		master.EncryptionConfigFile,
		pkiFile(pki.CertFile(pki.CACertAndKeyBaseName)),
		pkiFile(pki.KeyFile(pki.CACertAndKeyBaseName)),
		pkiFile(pki.CertFile(pki.EtcdCACertAndKeyBaseName)),
		pkiFile(pki.KeyFile(pki.EtcdCACertAndKeyBaseName)),
		pkiFile(pki.CertFile(pki.FrontProxyCACertAndKeyBaseName)),
		pkiFile(pki.KeyFile(pki.FrontProxyCACertAndKeyBaseName)),
	}
	for _, kp := range pki.KeyPairs() {
		files = append(files, pkiFile(kp.KeyName), pkiFile(kp.PubName))
	}
	slices.Sort(files)
	return files
}

// wantedFiles are the files a backup with header h must carry: those of
// BackupFiles, but for the signing key pair in a format-1 backup, which
// anvil wrote before it signed backups.
func wantedFiles(h *envelope.BackupHeader) []string {
	want := BackupFiles()
	if h.SigningKey == "" {
		want = slices.DeleteFunc(want, func(p string) bool {
			return p == signingFile(pki.BackupSigningKeyName) || p == signingFile(pki.BackupSigningPubKeyName)
		})
	}
	return want
}

func signingFile(name string) string { return path.Join(hostfs.PKIDir, name) }

// carriedFileMode is the mode every file is stored and restored with:
// 0600, certificates and sa.pub included, as package pki writes them (CIS
// 1.1.20). Readers use it, never the mode a backup records, which whoever
// wrote the file chose (backups from before kept 0644 for certificates).
const carriedFileMode fs.FileMode = 0o600

// checkCarriedFiles checks the files read from a backup (host paths with
// their leading slash) against what Take puts in, BackupFiles: a record
// for any other path is refused, not skipped, because a crafted backup
// would use it to put a cron job or an authorized_keys on the machine it
// is restored to; every one of BackupFiles must be there; and the cluster
// CA inside must be the one the header names.
func checkCarriedFiles(files map[string][]byte, h *envelope.BackupHeader) error {
	want := wantedFiles(h)
	var extra []string
	for p := range files {
		if !slices.Contains(want, p) {
			extra = append(extra, p)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return envelope.NewError(envelope.ErrCorruptBackup, "file", "%s: not a file anvil backups hold (%s)", strings.Join(extra, ", "), strings.Join(want, ", "))
	}
	for _, p := range want {
		if _, ok := files[p]; !ok {
			return envelope.NewError(envelope.ErrCorruptBackup, "file", "%s is missing", p)
		}
	}
	ca := files[path.Join(hostfs.PKIDir, pki.CertFile(pki.CACertAndKeyBaseName))]
	if got, err := caHashOfPEM(ca); err != nil || got != h.CACertHash {
		return envelope.NewError(envelope.ErrCorruptBackup, "file", "the CA inside does not match the header's %s (%s, %v)", h.CACertHash, got, err)
	}
	if h.SigningKey != "" {
		// A master rebuilt from the backup signs with the key it carries:
		// it must be the one that signed the backup.
		pub, err := pki.ParsePublicKey(files[signingFile(pki.BackupSigningPubKeyName)])
		if k, ok := pub.(ed25519.PublicKey); err != nil || !ok || envelope.FormatSigningKey(k) != h.SigningKey {
			return envelope.NewError(envelope.ErrCorruptBackup, "file", "the backup signing key inside is not the %s that signed it (%v)", h.SigningKey, err)
		}
	}
	return nil
}

// BackupOptions are the inputs of `anvil backup`.
type BackupOptions struct {
	Root hostfs.Root
	// Recipients are age public keys the backup is encrypted to besides
	// the cluster file's backup.recipients.
	Recipients []string
	// AllowUnencrypted writes a backup without recipients; without it (or
	// the cluster file's backup.allowUnencrypted) such a backup is refused
	// with ErrUnencrypted before anything is read.
	AllowUnencrypted bool
	// Trigger records who asked (manual unless the timer runs it).
	Trigger envelope.BackupTrigger
	// Endpoint is the member to snapshot; empty means this master's own.
	Endpoint string
	// Client replaces the connection EtcdClient makes (tests).
	Client *clientv3.Client
	Log    *slog.Logger
	Task   *progress.Task
	// Now is the clock the backup is stamped with (its header's Created
	// and its file name); time.Now when nil.
	Now func() time.Time
}

func (o BackupOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// frozen is a clock stopped at t: a backup's file name and its header
// name the same second.
func frozen(t time.Time) func() time.Time { return func() time.Time { return t } }

// BackupResult describes a backup that was written completely.
type BackupResult struct {
	Header envelope.BackupHeader `json:"header"`
	// Path is the file written, when the backup went to a file.
	Path           string        `json:"path,omitempty"`
	Files          []string      `json:"files"`
	SnapshotBytes  int64         `json:"snapshotBytes"`
	SnapshotSHA256 string        `json:"snapshotSHA256"`
	Bytes          int64         `json:"bytes"`
	Elapsed        time.Duration `json:"elapsed"`
}

// BackupSource is what a backup is taken from: this master's identity and
// files, and an etcd client.
type backupSource struct {
	state   *master.NodeState
	cluster *v1alpha1.Cluster
	client  *clientv3.Client
	owned   bool
	ep      string
}

func (s *backupSource) close() {
	if s.owned {
		s.client.Close()
	}
}

func openBackupSource(ctx context.Context, o BackupOptions) (*backupSource, error) {
	st, err := master.ReadNodeState(o.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, master.ErrNotInitialized
	}
	if err != nil {
		return nil, err
	}
	if st.Role != v1alpha1.RoleMaster {
		return nil, fmt.Errorf("node %s is a %s: backups are taken on masters", st.Node, st.Role)
	}
	c, _, err := v1alpha1.Load(o.Root.Path(master.ClusterFile))
	if err != nil {
		return nil, err
	}
	s := &backupSource{state: st, cluster: c, client: o.Client, ep: o.Endpoint}
	if s.client == nil {
		var eps []string
		if o.Endpoint != "" {
			eps = []string{o.Endpoint}
		}
		if s.client, err = etcd.Dial(ctx, o.Root, eps...); err != nil {
			return nil, err
		}
		s.owned = true
	}
	if s.ep == "" {
		s.ep = s.client.Endpoints()[0]
	}
	return s, nil
}

// Backup writes a backup of this master's etcd member, with the files in
// BackupFiles, to w, streaming: the snapshot is never held in memory.
func Backup(ctx context.Context, o BackupOptions, w io.Writer) (*BackupResult, error) {
	s, err := openBackupSource(ctx, o)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.backup(ctx, o, w)
}

func (s *backupSource) backup(ctx context.Context, o BackupOptions, w io.Writer) (*BackupResult, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	start := time.Now()
	trigger := o.Trigger
	if trigger == "" {
		trigger = envelope.TriggerManual
	}
	recipients := s.recipients(o.Recipients)
	if len(recipients) == 0 {
		if !o.AllowUnencrypted && !s.cluster.Backup.AllowUnencrypted {
			return nil, ErrUnencrypted
		}
		o.Task.Warn("%s", UnencryptedWarning)
	}

	// Everything that can fail cheaply is read before the snapshot starts.
	key, err := signingKey(o.Root, s.cluster)
	if err != nil {
		return nil, err
	}
	files, err := readCarriedFiles(o.Root)
	if err != nil {
		return nil, err
	}
	caHash, err := pki.CAHashFromFile(o.Root.Join(hostfs.PKIDir, pki.CertFile(pki.CACertAndKeyBaseName)))
	if err != nil {
		return nil, err
	}
	sr, err := s.client.Status(ctx, s.ep)
	if err != nil {
		return nil, fmt.Errorf("etcd status of %s: %w", s.ep, err)
	}
	members, err := s.members(ctx)
	if err != nil {
		return nil, err
	}

	o.Task.Start("snapshot", fmt.Sprintf("streaming a snapshot of %s (database %s)", s.ep, human.Bytes(sr.DbSize)))
	snapCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	snap, err := s.client.SnapshotWithVersion(clientv3.WithRequireLeader(snapCtx))
	if err != nil {
		return nil, fmt.Errorf("etcd snapshot from %s: %w", s.ep, err)
	}
	defer snap.Snapshot.Close()
	rev := sr.Header.Revision
	if snap.Header != nil && snap.Header.Revision > 0 {
		rev = snap.Header.Revision
	}
	h := envelope.BackupHeader{
		Cluster:            s.cluster.Name,
		KubernetesVersion:  s.state.KubernetesVersion,
		EtcdVersion:        sr.Version,
		EtcdStorageVersion: snap.Version,
		Revision:           rev,
		Members:            members,
		Node:               s.state.Node,
		Created:            o.now().UTC().Truncate(time.Millisecond),
		AnvilVersion:       buildinfo.Version(),
		Trigger:            trigger,
		CACertHash:         caHash.String(),
	}
	res, err := writeBackup(w, h, recipients, key, files, snap.Snapshot)
	if err != nil {
		return nil, err
	}
	res.Elapsed = time.Since(start)
	log.Info("backup written", "node", res.Header.Node, "revision", res.Header.Revision, "snapshot-bytes", res.SnapshotBytes, "bytes", res.Bytes, "encrypted", res.Header.Encrypted, "elapsed", res.Elapsed)
	return res, nil
}

// recipients are the cluster file's backup.recipients, then those of
// extra that it does not name already.
func (s *backupSource) recipients(extra []string) []string {
	recipients := slices.Clone(s.cluster.Backup.Recipients)
	for _, r := range extra {
		if !slices.Contains(recipients, r) {
			recipients = append(recipients, r)
		}
	}
	return recipients
}

// carriedFile is one of BackupFiles as the envelope stores it: its host
// path without the leading slash.
type carriedFile struct {
	path string
	data []byte
}

// readCarriedFiles reads BackupFiles under root; every one must exist.
func readCarriedFiles(root hostfs.Root) ([]carriedFile, error) {
	var files []carriedFile
	for _, hp := range BackupFiles() {
		b, err := os.ReadFile(root.Path(hp))
		if err != nil {
			return nil, fmt.Errorf("backup needs %s: %w", root.Path(hp), err)
		}
		files = append(files, carriedFile{strings.TrimPrefix(hp, "/"), b})
	}
	return files, nil
}

// members is etcd's membership as the header records it.
func (s *backupSource) members(ctx context.Context) ([]envelope.BackupMember, error) {
	ml, err := s.client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd member list: %w", err)
	}
	members := make([]envelope.BackupMember, 0, len(ml.Members))
	for _, m := range ml.Members {
		name := m.Name
		if name == "" {
			// A member added but not yet started has no name.
			name = fmt.Sprintf("unstarted-%016x", m.ID)
		}
		members = append(members, envelope.BackupMember{
			Name: name, ID: fmt.Sprintf("%016x", m.ID),
			PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner,
		})
	}
	return members, nil
}

// writeBackup writes the envelope of h, files and the snapshot to w; the
// result is complete but for Elapsed.
func writeBackup(w io.Writer, h envelope.BackupHeader, recipients []string, key ed25519.PrivateKey, files []carriedFile, snapshot io.Reader) (*BackupResult, error) {
	cw := &countingWriter{w: w}
	ew, err := envelope.NewEnvelopeWriter(cw, h, recipients, key)
	if err != nil {
		return nil, err
	}
	res := &BackupResult{}
	for _, f := range files {
		if err := ew.AddFile(f.path, carriedFileMode, f.data); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, "/"+f.path)
	}
	n, err := ew.WriteSnapshot(snapshot)
	if err != nil {
		return nil, err
	}
	if err := ew.Close(); err != nil {
		return nil, fmt.Errorf("write backup: %w", err)
	}
	sum := ew.SnapshotSHA256()
	h.Encrypted, h.Recipients, h.Compression = len(recipients) > 0, recipients, envelope.CompressionZstd
	h.SigningKey = envelope.FormatSigningKey(key.Public().(ed25519.PublicKey))
	res.Header = h
	res.SnapshotBytes, res.SnapshotSHA256 = n, fmt.Sprintf("%x", sum[:])
	res.Bytes = cw.n
	return res, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// BackupToFile writes a backup to file atomically with mode 0600: a crash
// or a failure leaves no partial backup under that name.
func BackupToFile(ctx context.Context, o BackupOptions, file string) (*BackupResult, error) {
	s, err := openBackupSource(ctx, o)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.backupToFile(ctx, o, file)
}

func (s *backupSource) backupToFile(ctx context.Context, o BackupOptions, file string) (*BackupResult, error) {
	pr, pw := io.Pipe()
	type result struct {
		res *BackupResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := s.backup(ctx, o, pw)
		pw.CloseWithError(err)
		done <- result{res, err}
	}()
	werr := fsutil.WriteFrom(file, pr, 0o600, 0o700)
	pr.CloseWithError(errors.Join(werr, io.ErrClosedPipe))
	r := <-done
	if r.err != nil {
		return nil, r.err
	}
	if werr != nil {
		return nil, werr
	}
	r.res.Path = file
	return r.res, nil
}

// BackupName is the file name of a backup taken at created on node.
func BackupName(cluster, node string, created time.Time) string {
	return fmt.Sprintf("%s-%s-%s%s", cluster, node, created.UTC().Format("20060102T150405Z"), BackupFileExt)
}

// newBackupPath is a new file in dir for a backup taken at created; a
// second backup within the same second gets a numbered name.
func newBackupPath(dir, cluster, node string, created time.Time) string {
	name := BackupName(cluster, node, created)
	p := path.Join(dir, name)
	for i := 1; ; i++ {
		if ok, err := fsutil.Exists(p); err != nil || !ok {
			return p
		}
		p = path.Join(dir, strings.TrimSuffix(name, BackupFileExt)+"."+strconv.Itoa(i)+BackupFileExt)
	}
}

// BackupDir is where this master keeps its backups: the cluster file's
// backup.dir under root.
func BackupDir(root hostfs.Root) (string, error) {
	c, _, err := v1alpha1.Load(root.Path(master.ClusterFile))
	if err != nil {
		return "", err
	}
	return root.Path(c.Backup.Dir), nil
}

// BackupToDir writes a backup into the master's backup directory under a
// new name (BackupName).
func BackupToDir(ctx context.Context, o BackupOptions) (*BackupResult, error) {
	s, err := openBackupSource(ctx, o)
	if err != nil {
		return nil, err
	}
	defer s.close()
	dir := o.Root.Path(s.cluster.Backup.Dir)
	o.Now = frozen(o.now())
	return s.backupToFile(ctx, o, newBackupPath(dir, s.cluster.Name, s.state.Node, o.now()))
}

// ScheduledResult is what one run of the backup timer did.
type ScheduledResult struct {
	// Skipped says why no backup was taken (this member is not the leader).
	Skipped string        `json:"skipped,omitempty"`
	Backup  *BackupResult `json:"backup,omitempty"`
	Pruned  []BackupEntry `json:"pruned,omitempty"`
}

// ScheduledBackup is one run of the backup timer, which fires on every
// master: only the etcd leader takes the backup, so the cluster is backed
// up once per run, not once per master; then scheduled backups beyond
// backup.retain are pruned, oldest first.
func ScheduledBackup(ctx context.Context, o BackupOptions) (*ScheduledResult, error) {
	o.Trigger = envelope.TriggerScheduled
	s, err := openBackupSource(ctx, o)
	if err != nil {
		return nil, err
	}
	defer s.close()
	sr, err := s.client.Status(ctx, s.ep)
	if err != nil {
		return nil, fmt.Errorf("etcd status of %s: %w", s.ep, err)
	}
	if sr.Leader != sr.Header.MemberId {
		return &ScheduledResult{Skipped: fmt.Sprintf("this member (%016x) is not the etcd leader (%016x): the leader takes the scheduled backup", sr.Header.MemberId, sr.Leader)}, nil
	}
	dir := o.Root.Path(s.cluster.Backup.Dir)
	o.Now = frozen(o.now())
	res, err := s.backupToFile(ctx, o, newBackupPath(dir, s.cluster.Name, s.state.Node, o.now()))
	if err != nil {
		return nil, err
	}
	pruned, err := PruneBackups(dir, PruneOptions{Cluster: s.cluster.Name, Keep: s.cluster.Backup.Retain})
	return &ScheduledResult{Backup: res, Pruned: pruned}, err
}

// TakeOptions say where `anvil backup` puts a backup.
type TakeOptions struct {
	BackupOptions
	// Output is a file, "-" for Stdout, or "" for a new file in backup.dir.
	Output string
	Stdout io.Writer
	// Scheduled runs as the backup timer does: only on the etcd leader,
	// into backup.dir, then pruned to backup.retain.
	Scheduled bool
}

// Take is `anvil backup`: one backup to the destination o names. Its result
// says why no backup was taken (Scheduled on a member that does not lead)
// and what was pruned.
func Take(ctx context.Context, o TakeOptions) (*ScheduledResult, error) {
	switch {
	case o.Scheduled && o.Output != "":
		return nil, &ArgsError{"--scheduled writes into backup.dir: leave out -o"}
	case o.Scheduled:
		return ScheduledBackup(ctx, o.BackupOptions)
	case o.Output == "-":
		if o.Stdout == nil {
			return nil, &ArgsError{"no stdout to stream the backup to"}
		}
		res, err := Backup(ctx, o.BackupOptions, o.Stdout)
		return &ScheduledResult{Backup: res}, err
	case o.Output == "":
		res, err := BackupToDir(ctx, o.BackupOptions)
		return &ScheduledResult{Backup: res}, err
	default:
		res, err := BackupToFile(ctx, o.BackupOptions, o.Output)
		return &ScheduledResult{Backup: res}, err
	}
}
