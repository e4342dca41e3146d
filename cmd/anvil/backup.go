package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/internal/hostfs"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/master"
)

func newBackupCmd(a *app) *cobra.Command {
	var (
		root, output, endpoint string
		recipients             []string
		scheduled, loop        bool
		allowPlain             bool
	)
	cmd := &cobra.Command{
		Use:   "backup [-o FILE|-]",
		Short: "Back up this master's etcd, CAs and keys into one verified, optionally encrypted file",
		Long: `Streams a snapshot of this master's etcd member through etcd's maintenance
API into an anvil backup: a versioned envelope with a clear header (cluster,
Kubernetes and etcd versions, revision, members, time), zstd compression, the
snapshot's sha256, encryption to the age recipients in the cluster file's
backup.recipients (and --recipient), and an ed25519 signature by the
cluster's backup signing key (/etc/kubernetes/pki/backup-signing.key, the
same on every master): readers check it before they decrypt anything, so a
backup cannot be forged by someone who only knows the recipients. It also carries what rebuilding a master
needs that etcd does not hold: the CAs and their keys, the service-account
key pair, the Secrets encryption config and the cluster file.

Without -o the backup goes into backup.dir (default /var/lib/anvil/backups)
under a new name; '-o -' streams it to stdout. Files are written 0600 and
appear only when complete. A backup without recipients would hold the
cluster's keys in the clear: it is refused unless --allow-unencrypted (or
the cluster file's backup.allowUnencrypted: true, which the scheduled
backups need) allows it, and anvil then says so loudly every time.

--scheduled is what the backup timer runs on every master: only the etcd
leader takes the backup, into backup.dir, then scheduled backups beyond
backup.retain are pruned, oldest first. With backup.schedule in the cluster
file, init and join install that timer (anvil-backup.timer) under the
systemd layout; under the process layout, where no systemd runs timers,
anvil's supervisor runs 'anvil backup --scheduled --loop', which keeps the
same schedule (the same calendar expression) itself.`,
		Example: `  anvil backup
  anvil backup -o /srv/etcd.anvilbak
  anvil backup -o - | ssh vault 'cat > etcd.anvilbak'
  anvil backup --recipient age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			task, done := a.nodeTask(hostnameOr("backup"))
			defer done()
			o := backup.BackupOptions{
				Root: hostfs.Root(root), Recipients: recipients, AllowUnencrypted: allowPlain, Endpoint: endpoint, Log: a.logger(), Task: task,
			}
			ctx := cmd.Context()
			switch {
			case loop:
				if !scheduled || output != "" {
					return usageError("--loop runs the schedule: use it as --scheduled --loop, without -o")
				}
				log := a.logger()
				return backup.RunBackupSchedule(ctx, o, func(res *backup.ScheduledResult, err error) {
					switch {
					case err != nil:
						log.Error("scheduled backup failed", "err", err)
					case res.Skipped != "":
						log.Info("no backup taken", "reason", res.Skipped)
					default:
						log.Info("scheduled backup taken", "path", res.Backup.Path, "revision", res.Backup.Header.Revision,
							"bytes", res.Backup.Bytes, "encrypted", res.Backup.Header.Encrypted, "pruned", len(res.Pruned))
					}
				})
			case output == "-":
				if f, ok := a.out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					return usageError("refusing to write a binary backup to a terminal: redirect stdout, or use -o FILE")
				}
			}
			res, err := backup.Take(ctx, backup.TakeOptions{BackupOptions: o, Output: output, Stdout: a.out, Scheduled: scheduled})
			if err != nil {
				return backupArgsError(err)
			}
			if res.Skipped != "" {
				fmt.Fprintln(a.out, "no backup taken: "+res.Skipped)
				return nil
			}
			if output == "-" {
				printBackupResult(a.errOut, res.Backup)
				return nil
			}
			printBackupResult(a.out, res.Backup)
			for _, e := range res.Pruned {
				fmt.Fprintf(a.out, "pruned %s\n", e.Path)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	cmd.Flags().StringVarP(&output, "output", "o", "", "backup file, or - for stdout (default: a new file in backup.dir)")
	cmd.Flags().StringSliceVar(&recipients, "recipient", nil, "age public key to encrypt to, besides the cluster file's backup.recipients (repeatable)")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "etcd member to snapshot (default: this master's own)")
	cmd.Flags().BoolVar(&allowPlain, "allow-unencrypted", false, "write the backup although it has no recipients: it holds the cluster's keys in the clear")
	cmd.Flags().BoolVar(&scheduled, "scheduled", false, "run as the backup timer does: only on the etcd leader, into backup.dir, then prune to backup.retain")
	cmd.Flags().BoolVar(&loop, "loop", false, "with --scheduled: keep running, taking the scheduled backup at every time backup.schedule names (the process layout's timer)")
	cmd.AddCommand(newBackupListCmd(a), newBackupPruneCmd(a), newBackupInspectCmd(a), newBackupExportCmd(a), newBackupExportFilesCmd(a))
	return cmd
}

func printBackupResult(w io.Writer, r *backup.BackupResult) {
	where := r.Path
	if where == "" {
		where = "stdout"
	}
	enc := "NOT encrypted"
	if r.Header.Encrypted {
		enc = fmt.Sprintf("encrypted to %d recipient(s)", len(r.Header.Recipients))
	}
	secs := r.Elapsed.Seconds()
	fmt.Fprintf(w, "backup of cluster %s at revision %d written to %s: %s (snapshot %s, %.0f MB/s), %s, in %.2fs\n",
		r.Header.Cluster, r.Header.Revision, where, human.Bytes(r.Bytes), human.Bytes(r.SnapshotBytes),
		float64(r.SnapshotBytes)/1e6/max(secs, 1e-9), enc, secs)
}

// backupDirFlags find the backup directory: --dir, else the cluster
// file's backup.dir under --root.
type backupDirFlags struct {
	root string
	dir  string
}

func (f *backupDirFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.root, "root", "", "prefix for every host path")
	cmd.Flags().StringVar(&f.dir, "dir", "", "backup directory (default: the cluster file's backup.dir)")
}

func (f *backupDirFlags) resolve() (string, error) {
	if f.dir != "" {
		return f.dir, nil
	}
	return backup.BackupDir(hostfs.Root(f.root))
}

func newBackupListCmd(a *app) *cobra.Command {
	var f backupDirFlags
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the backups in backup.dir, newest first (reads headers only)",
		Example: `  anvil backup list
  anvil backup list -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := f.resolve()
			if err != nil {
				return err
			}
			es, err := backup.ListBackups(dir)
			if err != nil {
				return err
			}
			return printOutput(a.out, output, es, func() error { return printBackupEntries(a.out, es) })
		},
	}
	f.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func printBackupEntries(w io.Writer, es []backup.BackupEntry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CREATED\tCLUSTER\tNODE\tREVISION\tKUBERNETES\tTRIGGER\tENCRYPTED\tSIZE\tFILE")
	for _, e := range es {
		if e.Header == nil {
			fmt.Fprintf(tw, "-\t-\t-\t-\t-\t-\t-\t%s\t%s (%s)\n", human.Bytes(e.Size), e.Path, e.Problem)
			continue
		}
		h := e.Header
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%v\t%s\t%s\n", h.Created.Format(time.RFC3339), h.Cluster, h.Node,
			h.Revision, h.KubernetesVersion, h.Trigger, h.Encrypted, human.Bytes(e.Size), e.Path)
	}
	return tw.Flush()
}

func newBackupPruneCmd(a *app) *cobra.Command {
	var f backupDirFlags
	var (
		output         string
		keep           int
		manual, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove the oldest backups beyond backup.retain (scheduled ones unless --manual)",
		Long: `Keeps the newest --keep backups of this cluster in backup.dir (default: the
cluster file's backup.retain) and removes the rest, oldest first. Only
scheduled backups are counted and removed unless --manual; a file whose
header cannot be read, another cluster's backup, or anything that is not a
backup is never removed.`,
		Example: `  anvil backup prune
  anvil backup prune --keep 3 --manual --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := f.resolve()
			if err != nil {
				return err
			}
			c, _, err := v1alpha1.Load(hostfs.Root(f.root).Path(master.ClusterFile))
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("keep") {
				keep = c.Backup.Retain
			}
			removed, err := backup.PruneBackups(dir, backup.PruneOptions{Cluster: c.Name, Keep: keep, Manual: manual, DryRun: dryRun})
			if perr := printOutput(a.out, output, removed, func() error {
				verb := "removed"
				if dryRun {
					verb = "would remove"
				}
				for _, e := range removed {
					fmt.Fprintf(a.out, "%s %s\n", verb, e.Path)
				}
				if len(removed) == 0 {
					fmt.Fprintf(a.out, "nothing to prune (keeping %d)\n", keep)
				}
				return nil
			}); perr != nil {
				return perr
			}
			return err
		},
	}
	f.add(cmd)
	addOutputFlag(cmd, &output)
	cmd.Flags().IntVar(&keep, "keep", 0, "how many of the newest backups to keep (default: backup.retain)")
	cmd.Flags().BoolVar(&manual, "manual", false, "count and remove backups taken by hand too")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be removed, remove nothing")
	return cmd
}

func newBackupInspectCmd(a *app) *cobra.Command {
	var (
		read   backupReadFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "inspect FILE|-",
		Short: "Show a backup's header and verify the whole backup when it can be read",
		Long: `Prints the clear header of a backup. When the backup is not encrypted, or
--identity opens it, it reads the whole backup and checks every layer (chunk
CRCs, age's integrity check, zstd checksum, the snapshot's sha256), writing
nothing; a damaged backup makes it fail with the reason.`,
		Example: `  anvil backup inspect /var/lib/anvil/backups/lab-m1-20260101T020000Z.anvilbak
  anvil backup inspect backup.anvilbak --identity ~/.config/anvil/backup.key -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, keys, closeFn, err := read.open(a, "", args[0])
			if err != nil {
				return err
			}
			defer closeFn()
			in, err := backup.InspectBackup(r, keys)
			if err != nil {
				return fmt.Errorf("backup %s: %w", args[0], err)
			}
			return printOutput(a.out, output, in, func() error { return printInspection(a.out, in) })
		},
	}
	read.add(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func printInspection(w io.Writer, in *backup.Inspection) error {
	h := in.Header
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "cluster\t%s\n", h.Cluster)
	fmt.Fprintf(tw, "created\t%s on %s (%s)\n", h.Created.Format(time.RFC3339), h.Node, h.Trigger)
	fmt.Fprintf(tw, "kubernetes\t%s\n", h.KubernetesVersion)
	fmt.Fprintf(tw, "etcd\t%s (storage %s), revision %d\n", h.EtcdVersion, orDash(h.EtcdStorageVersion), h.Revision)
	for i, m := range h.Members {
		label := ""
		if i == 0 {
			label = "members"
		}
		learner := ""
		if m.Learner {
			learner = " (learner)"
		}
		fmt.Fprintf(tw, "%s\t%s %s %s%s\n", label, m.Name, m.ID, strings.Join(m.PeerURLs, ","), learner)
	}
	fmt.Fprintf(tw, "cluster CA\t%s\n", h.CACertHash)
	fmt.Fprintf(tw, "anvil\t%s\n", h.AnvilVersion)
	if h.Encrypted {
		fmt.Fprintf(tw, "encrypted\tyes, to %s\n", strings.Join(h.Recipients, ", "))
	} else {
		fmt.Fprintf(tw, "encrypted\tNO: this backup holds the cluster's keys in the clear\n")
	}
	if in.Verified {
		c := in.Contents
		fmt.Fprintf(tw, "snapshot\t%s, sha256 %s\n", human.Bytes(c.SnapshotSize), c.SnapshotSHA256)
		for i, f := range c.Files {
			label := ""
			if i == 0 {
				label = "files"
			}
			fmt.Fprintf(tw, "%s\t/%s (%#o, %d bytes)\n", label, f.Path, f.Mode, f.Size)
		}
		fmt.Fprintf(tw, "verified\tyes: every layer checked\n")
	} else {
		fmt.Fprintf(tw, "verified\tno: %s\n", in.Unverified)
	}
	return tw.Flush()
}

func newBackupExportCmd(a *app) *cobra.Command {
	var (
		read   backupReadFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "export-snapshot FILE|- -o DB",
		Short: "Write the plain etcd snapshot inside a backup, for stock etcd tools",
		Long: `Verifies the whole backup and writes the etcd snapshot inside it to DB (0600),
exactly as etcd's maintenance API streamed it, etcd's own sha256 trailer
included: 'etcdutl snapshot restore DB' reads it. DB appears only once the
backup has been verified.`,
		Example: `  anvil backup export-snapshot backup.anvilbak -o etcd.db --identity backup.key
  etcdutl snapshot restore etcd.db --data-dir /tmp/etcd-restored`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" || output == "-" {
				return usageError("name the snapshot file with -o DB")
			}
			r, keys, closeFn, err := read.open(a, "", args[0])
			if err != nil {
				return err
			}
			defer closeFn()
			c, err := backup.ExportSnapshot(r, keys, output)
			if err != nil {
				return fmt.Errorf("backup %s: %w", args[0], err)
			}
			fmt.Fprintf(a.out, "etcd snapshot of cluster %s (revision %d, %s, sha256 %s) written to %s\n",
				c.Header.Cluster, c.Header.Revision, human.Bytes(c.SnapshotSize), c.SnapshotSHA256, output)
			return nil
		},
	}
	read.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "snapshot file to write (required)")
	return cmd
}

func newBackupExportFilesCmd(a *app) *cobra.Command {
	var (
		root, output string
		read         backupReadFlags
		force        bool
	)
	cmd := &cobra.Command{
		Use:   "export-files FILE|- [--root DIR]",
		Short: "Put a backup's CAs, keys, encryption config and cluster file in place, to rebuild a master from",
		Long: `Verifies the whole backup, then writes the files it carries besides the
snapshot at their host paths (under --root): the cluster CA, etcd CA and
front-proxy CA with their keys, the service-account key pair, the Secrets
encryption config and the cluster file, each with the mode anvil gives it
(keys 0600), whatever the backup recorded. A backup holding any other file,
or whose CA is not the one its header names, is refused. Nothing is written
unless the whole backup verifies; a file that exists with other content is
refused unless --force.

This is how a master is rebuilt on a new or reset machine without any
secret that was not in the backup: export the files, run anvil init with
them (it keeps the CAs and keys it finds and issues the rest from them),
then restore the same backup.`,
		Example: `  anvil backup export-files backup.anvilbak --identity ~/.config/anvil/backup.key
  anvil init -f /etc/anvil/cluster.yaml --node m1
  anvil restore backup.anvilbak --identity ~/.config/anvil/backup.key`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, keys, closeFn, err := read.open(a, hostfs.Root(root), args[0])
			if err != nil {
				return err
			}
			defer closeFn()
			files, err := backup.ExportFiles(r, keys, hostfs.Root(root), force)
			if err != nil {
				return fmt.Errorf("backup %s: %w", args[0], err)
			}
			return printOutput(a.out, output, files, func() error {
				for _, f := range files {
					fmt.Fprintf(a.out, "%-9s %s\n", f.Outcome, f.Path)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	read.add(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "replace files that exist with other content")
	addOutputFlag(cmd, &output)
	return cmd
}

// backupReadFlags are the flags of every command that reads a backup:
// the age identities that decrypt it, and whose signature it must carry.
type backupReadFlags struct {
	identities    []string
	signingKeys   []string
	allowUnsigned bool
}

func (f *backupReadFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&f.identities, "identity", nil, "age identity file to decrypt with (repeatable), or - for stdin when the backup is a file")
	cmd.Flags().StringSliceVar(&f.signingKeys, "signing-key", nil, "backup signing public key (ed25519:…) to accept, besides this master's own and the cluster file's "+
		"backup.signingPublicKey (repeatable)")
	cmd.Flags().BoolVar(&f.allowUnsigned, "allow-unsigned", false, "accept a backup without signature (written by an anvil from before backups were signed): anyone can write one")
}

// open reads the keys the flags name, then opens the backup the argument
// names (- is stdin, which then cannot also carry a key, and is spooled
// to an unnamed temporary file: a backup is read twice, its signature
// first). root is where this master's own signing key and cluster file
// are.
func (f *backupReadFlags) open(a *app, root hostfs.Root, arg string) (io.ReadSeeker, backup.Keys, func(), error) {
	ids, err := readIdentities(a, f.identities, arg == "-")
	if err != nil {
		return nil, backup.Keys{}, nil, err
	}
	trust, err := backup.LocalTrust(root, f.signingKeys, f.allowUnsigned)
	if err != nil {
		return nil, backup.Keys{}, nil, err
	}
	keys := backup.Keys{Identities: ids, Trust: trust}
	if arg == "-" {
		tmp, err := backup.Spool(a.in)
		if err != nil {
			return nil, backup.Keys{}, nil, err
		}
		return tmp, keys, func() { tmp.Close() }, nil
	}
	file, err := os.Open(arg)
	if err != nil {
		return nil, backup.Keys{}, nil, err
	}
	return file, keys, func() { file.Close() }, nil
}

// readIdentities reads the keys --identity names (see backup.ReadIdentities).
func readIdentities(a *app, files []string, backupOnStdin bool) ([]age.Identity, error) {
	ids, err := backup.ReadIdentities(files, a.in, backupOnStdin)
	return ids, backupArgsError(err)
}

// backupArgsError makes the backup package's complaints about the command
// line usage errors (exit 2).
func backupArgsError(err error) error {
	var ae *backup.ArgsError
	if errors.As(err, &ae) {
		return usageError("%s", ae.Msg)
	}
	return err
}
