package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/backup/envelope"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/internal/sshx"
)

// `anvil cluster restore`: the same snapshot for every master, and no
// member ever holding data from two. The backup is verified here first;
// then each master checks it can take its part, with nothing changed yet
// (the first master verifies the whole backup again after the upload, the
// others that their CA is the backup's); then the other masters leave
// (their control planes and etcd members stop, their data goes aside), the
// first master restores the snapshot as a one-member cluster, and the
// others rejoin it one at a time as fresh members that catch up from it.
// Each step on a master is `anvil restore` (see its help). A phase starts
// only when every master passed the ones before.

// restorePhases is `anvil cluster restore`, top to bottom.
func restorePhases(s *restoreState) []flowPhase {
	return []flowPhase{
		looking("connect", planConnect),            // connect.go
		looking("facts", planFacts),                // facts.go, with `anvil status -o json`
		{Name: "verify", Run: s.verifyWithMasters}, // restore.go, when the cluster file pins no signing key
		changing("check", s.planCheck),             // restore.go: upload, dry runs
		changing("leave", s.planLeave),             // restore.go
		changing("restore", s.planRestore),         // restore.go
		changing("rejoin", s.planRejoin),           // restore.go
	}
}

// RestoreOptions are the inputs of Restore.
type RestoreOptions struct {
	Options
	// Backup is the backup file on this machine.
	Backup string
	// Identity is the content of the age identity file that opens an
	// encrypted backup. It is parsed here to verify the backup, and handed
	// to the first master on its restore's stdin: never on a command line,
	// never written on a master.
	Identity []byte
	// Force restores a backup of another cluster name.
	Force bool
	// AllowUnsigned restores a backup without signature (format 1, from
	// an anvil before backups were signed), here and on the masters.
	AllowUnsigned bool
	// Timeout bounds each master's restore or rejoin.
	Timeout time.Duration
}

// RestoreResult is what a cluster restore did.
type RestoreResult struct {
	Header envelope.BackupHeader `json:"header"`
	// First is the master the snapshot was restored on; the others
	// rejoined it.
	First string `json:"first"`
	// ServedRevision is the highest revision any master had served; the
	// restored cluster starts above it.
	ServedRevision int64 `json:"servedRevision"`
	// Restore is the first master's `anvil restore`; Rejoined the others'
	// `anvil restore --rejoin`, in order.
	Restore  *backup.RestoreResult  `json:"restore,omitempty"`
	Rejoined []backup.RestoreResult `json:"rejoined,omitempty"`
	// Consistency is etcd's members compared once the last one rejoined.
	Consistency *etcd.ConsistencyReport `json:"consistency,omitempty"`
	Elapsed     time.Duration           `json:"elapsed"`
}

// restoreState is what a cluster restore carries between its phases.
type restoreState struct {
	o          RestoreOptions
	header     envelope.BackupHeader
	sha256     string
	size       int64
	first      *host
	others     []*host
	remote     string // the backup's path on the first master
	uploaded   bool
	mu         sync.Mutex
	served     int64
	result     RestoreResult
	left       []string
	identities []age.Identity
	// verified says verifyLocal passed.
	verified bool
}

// restoreDir holds the backup on the first master during a restore: on
// tmpfs, root's only, removed when the restore ends.
const restoreDir = applyDir + "/restore"

// Restore restores the cluster in o from a backup on this machine.
func Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	s := &restoreState{o: o}
	if len(o.Identity) > 0 {
		ids, err := age.ParseIdentities(bytes.NewReader(o.Identity))
		if err != nil {
			return nil, fmt.Errorf("backup identity: %w", err)
		}
		s.identities = ids
	}
	r, err := newRun(o.Options)
	if err != nil {
		return nil, err
	}
	defer r.close()
	// With a pinned key the backup is verified before any host is
	// contacted; else once the masters said which key they hold.
	if r.cluster.Backup.SigningPublicKey != "" {
		trust, _, err := backupTrust(r.cluster, nil, s.o.AllowUnsigned)
		if err != nil {
			return nil, err
		}
		if err := s.verifyLocal(r, trust); err != nil {
			return nil, err
		}
	}
	r.mastersOnly()
	if len(r.hosts) == 0 {
		return nil, errors.New("the cluster file names no master")
	}
	r.factsReq = factsRequest{version: r.cluster.KubernetesVersion, status: true}
	s.first = r.hosts[0]
	s.others = r.hosts[1:]
	s.result.First = s.first.Name
	err = r.do(ctx, "restore", restorePhases(s))
	if s.uploaded && s.first.client != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		if rerr := s.first.client.RunAsRoot(cctx, "rm -rf "+restoreDir, nil, io.Discard, io.Discard); rerr != nil {
			r.log.Warn("remove the uploaded backup", "host", s.first.Name, "err", rerr)
		}
		cancel()
	}
	s.result.Elapsed = time.Since(start)
	if err != nil && len(s.left) > 0 {
		err = fmt.Errorf("%w\nthe cluster restore stopped half-way: %s left the old cluster (their data is set aside); "+
			"run anvil cluster restore again with the same backup once the cause is fixed", err, strings.Join(s.left, ", "))
	}
	return &s.result, err
}

// verifyWithMasters verifies the backup against the signing keys the
// masters hold, when the cluster file pins none.
func (s *restoreState) verifyWithMasters(_ context.Context, r *run) error {
	if s.verified {
		return nil
	}
	trust, note, err := backupTrust(r.cluster, r.alive(), s.o.AllowUnsigned)
	if err != nil {
		return err
	}
	r.rep.Say("checking the backup's signature against%s", note)
	return s.verifyLocal(r, trust)
}

// verifyLocal reads the whole backup here, its signature first.
func (s *restoreState) verifyLocal(r *run, trust envelope.Trust) error {
	f, fi, err := openBackupFile(s.o.Backup)
	if err != nil {
		return err
	}
	defer f.Close()
	v, err := envelope.VerifyBackup(f, s.identities, trust)
	if err != nil {
		return fmt.Errorf("backup %s: %w", s.o.Backup, err)
	}
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("backup %s: %w", s.o.Backup, err)
	}
	if v.Contents == nil {
		return fmt.Errorf("backup %s is encrypted to %s: give its age identity (--identity KEYFILE) to restore it", s.o.Backup, strings.Join(v.Header.Recipients, ", "))
	}
	if err := checkBackupForCluster(r.cluster, v.Header, s.o.Force); err != nil {
		return fmt.Errorf("backup %s: %w", s.o.Backup, err)
	}
	s.header, s.size, s.sha256 = v.Header, fi.Size(), hex.EncodeToString(h.Sum(nil))
	s.verified = true
	s.result.Header = v.Header
	r.rep.Say("backup %s verified: cluster %s, taken on %s at %s, revision %d", s.o.Backup, v.Header.Cluster, v.Header.Node,
		v.Header.Created.Format(time.RFC3339), v.Header.Revision)
	return nil
}

// gate is a phase's first step: the phase changes masters only when every
// master passed every phase before it.
func (s *restoreState) gate(r *run) []step {
	return []step{{host: s.first, do: "check that every master passed the phases before", run: func(context.Context) (string, error) {
		var failed []string
		for _, h := range r.hosts {
			if h.failed() {
				failed = append(failed, h.Name)
			}
		}
		if len(failed) > 0 {
			return "", fmt.Errorf("not going on: %s failed, and a cluster restore needs every master", strings.Join(failed, ", "))
		}
		return "every master is ready", nil
	}}}
}

// restoreCommand is anvil restore with args on a master, holding the
// host's apply lock; its stdout (JSON) is decoded into res.
func (s *restoreState) restoreCommand(ctx context.Context, r *run, h *host, what string, args []string, stdin io.Reader) (*backup.RestoreResult, error) {
	var out bytes.Buffer
	cmd := anvilOnHost + " restore " + strings.Join(args, " ") + " -o json"
	if err := r.runLogged(ctx, h, what, locked(cmd), stdin, &out); err != nil {
		return nil, err
	}
	var res backup.RestoreResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("%s: its output is not a restore result: %w", what, err)
	}
	return &res, nil
}

func (s *restoreState) identityStdin() io.Reader {
	if len(s.o.Identity) == 0 {
		return nil
	}
	return bytes.NewReader(s.o.Identity)
}

// readArgs are what `anvil restore` on a master needs to read the backup.
func (s *restoreState) readArgs() []string {
	var args []string
	if len(s.o.Identity) > 0 {
		args = append(args, "--identity", "-")
	}
	if s.o.AllowUnsigned {
		args = append(args, "--allow-unsigned")
	}
	return args
}

func (s *restoreState) noteServed(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.served = max(s.served, rev)
	s.result.ServedRevision = s.served
}

func (s *restoreState) planCheck(r *run) plan {
	pl := plan{before: s.gate(r)}
	for _, h := range r.alive() {
		if !h.facts.ControlPlane() {
			pl.steps = append(pl.steps, step{host: h, do: "check that it runs a control plane", run: func(context.Context) (string, error) {
				return "", errors.New("no init or control-plane join completed here: a cluster restore restores the masters of a running cluster (run anvil cluster apply first)")
			}})
			continue
		}
		if h == s.first {
			pl.steps = append(pl.steps, step{host: h, do: "upload the backup, then anvil restore --dry-run: verify it again there and check it against this master", run: func(ctx context.Context) (string, error) {
				return s.checkFirst(ctx, r, h)
			}})
			continue
		}
		pl.steps = append(pl.steps, step{host: h, do: "anvil restore --leave --dry-run: check that it can leave, and that its CA is the backup's", run: func(ctx context.Context) (string, error) {
			return s.checkOther(ctx, r, h)
		}})
	}
	return pl
}

// checkHelp refuses an anvil on the host that lacks the restore steps.
func checkHelp(ctx context.Context, h *host) error {
	help, err := h.client.OutputAsRoot(ctx, anvilOnHost+" restore --help")
	if err != nil {
		return fmt.Errorf("anvil restore --help: %w", err)
	}
	if !strings.Contains(string(help), "--rejoin") || !strings.Contains(string(help), "--leave") {
		return errors.New("the anvil installed here cannot take part in a cluster restore (no anvil restore --leave/--rejoin): run anvil cluster apply first, which installs this anvil")
	}
	return nil
}

func (s *restoreState) checkFirst(ctx context.Context, r *run, h *host) (string, error) {
	if err := checkHelp(ctx, h); err != nil {
		return "", err
	}
	if err := s.upload(ctx, r, h); err != nil {
		return "", err
	}
	args := append([]string{sshx.ShellQuote(s.remote), "--dry-run", "--force"}, s.readArgs()...)
	res, err := s.restoreCommand(ctx, r, h, "anvil restore --dry-run", args, s.identityStdin())
	if err != nil {
		return "", err
	}
	s.noteServed(res.ServedRevision)
	return fmt.Sprintf("the backup verifies here too; revision %d would become %d", res.SnapshotRevision, res.Revision), nil
}

func (s *restoreState) checkOther(ctx context.Context, r *run, h *host) (string, error) {
	if err := checkHelp(ctx, h); err != nil {
		return "", err
	}
	res, err := s.restoreCommand(ctx, r, h, "anvil restore --leave --dry-run", []string{"--leave", "--dry-run", "--force"}, nil)
	if err != nil {
		return "", err
	}
	if res.CACertHash != s.header.CACertHash {
		return "", fmt.Errorf("its cluster CA (%s) is not the backup's (%s): it belongs to another cluster", res.CACertHash, s.header.CACertHash)
	}
	return "can leave; its CA is the backup's", nil
}

// upload copies the backup to the first master, into a root-only
// directory, and checks its sha256 there.
func (s *restoreState) upload(ctx context.Context, r *run, h *host) error {
	f, _, err := openBackupFile(s.o.Backup)
	if err != nil {
		return err
	}
	defer f.Close()
	s.remote = path.Join(restoreDir, "backup"+backup.BackupFileExt)
	s.uploaded = true
	q := sshx.ShellQuote(s.remote)
	script := strings.Join([]string{
		"set -e", "umask 077", "mkdir -p " + restoreDir, "chmod 700 " + restoreDir,
		"cat > " + q + ".tmp", "mv " + q + ".tmp " + q, "sha256sum " + q,
	}, "\n")
	var out bytes.Buffer
	start := time.Now()
	in := &meterReader{r: f, fn: func(_, done int64) { h.task.Detail("backup %s / %s", human.Bytes(done), human.Bytes(s.size)) }}
	if err := r.runLogged(ctx, h, "upload the backup", script, in, &out); err != nil {
		return err
	}
	if got, _, _ := strings.Cut(strings.TrimSpace(out.String()), " "); got != s.sha256 {
		return fmt.Errorf("the backup's sha256 on %s is %q, here %s: the upload was damaged", h.Name, got, s.sha256)
	}
	r.log.Debug("backup uploaded", "host", h.Name, "bytes", s.size, "elapsed", time.Since(start))
	return nil
}

func (s *restoreState) planLeave(r *run) plan {
	pl := plan{before: s.gate(r)}
	for _, h := range s.others {
		if h.failed() {
			continue
		}
		pl.steps = append(pl.steps, step{host: h, do: "anvil restore --leave --force: stop its control plane and etcd member, set the member's data aside", run: func(ctx context.Context) (string, error) {
			res, err := s.restoreCommand(ctx, r, h, "anvil restore --leave", []string{"--leave", "--force"}, nil)
			if err != nil {
				return "", err
			}
			s.mu.Lock()
			s.left = append(s.left, h.Name)
			s.mu.Unlock()
			s.noteServed(res.ServedRevision)
			return fmt.Sprintf("left; it had served up to revision %d", res.ServedRevision), nil
		}})
	}
	if len(pl.steps) == 0 {
		pl.before = nil
	}
	return pl
}

func (s *restoreState) planRestore(r *run) plan {
	h := s.first
	do := fmt.Sprintf("anvil restore BACKUP --force --min-revision <highest served>%s: a one-member cluster holding the backup", strings.Join(append([]string{""}, s.readArgs()...), " "))
	return plan{before: s.gate(r), steps: []step{{host: h, do: do, run: func(ctx context.Context) (string, error) {
		args := append([]string{sshx.ShellQuote(s.remote), "--force", "--min-revision", strconv.FormatInt(s.served, 10), "--timeout", s.o.Timeout.String()}, s.readArgs()...)
		res, err := s.restoreCommand(ctx, r, h, "anvil restore", args, s.identityStdin())
		if err != nil {
			return "", err
		}
		s.result.Restore = res
		return fmt.Sprintf("restored: revision %d, now %d; down %.1fs", res.SnapshotRevision, res.Revision, res.Downtime.Seconds()), nil
	}}}}
}

func (s *restoreState) planRejoin(r *run) plan {
	pl := plan{before: s.gate(r), oneAtATime: true}
	endpoint := "https://" + net.JoinHostPort(s.first.NodeAddress().String(), strconv.Itoa(etcd.ClientPort))
	for i, h := range s.others {
		last := i == len(s.others)-1
		pl.steps = append(pl.steps, step{host: h, do: "anvil restore --rejoin " + endpoint + ": a fresh member that catches up from " + s.first.Name, run: func(ctx context.Context) (string, error) {
			res, err := s.restoreCommand(ctx, r, h, "anvil restore --rejoin", []string{"--rejoin", endpoint, "--timeout", s.o.Timeout.String()}, nil)
			if err != nil {
				return "", err
			}
			s.result.Rejoined = append(s.result.Rejoined, *res)
			s.left = slices.DeleteFunc(s.left, func(n string) bool { return n == h.Name })
			c := res.Consistency
			if last {
				s.result.Consistency = c
				if c == nil || !c.Consistent || len(c.Members) != len(r.hosts) {
					return "", fmt.Errorf("after the last rejoin the etcd members do not all agree: %+v", c)
				}
			}
			if c != nil {
				return fmt.Sprintf("rejoined; %d members agree at revision %d", len(c.Members), c.Revision), nil
			}
			return "rejoined", nil
		}})
	}
	if len(pl.steps) == 0 {
		pl.before = nil
	}
	return pl
}
