package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"anvil.dev/anvil/installer"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/internal/progress"
)

func newClusterBackupCmd(a *app) *cobra.Command {
	f := &clusterFlags{}
	var (
		output     string
		identities []string
		allowPlain bool
	)
	cmd := &cobra.Command{
		Use:   "backup -f FILE [-o LOCAL]",
		Short: "Back up the cluster's etcd (and CAs and keys) from its etcd leader to this machine, verified",
		Long: `Runs 'anvil backup -o -' on the master whose etcd member leads (see 'anvil
backup --help' for what a backup holds and how it is encrypted), streams it
back over SSH and verifies it here as it arrives: every layer when it is not
encrypted or --identity opens it, else its header and framing (chunk CRCs,
its end), so a damaged copy never passes for a backup. The file is written
0600 and appears only once verified; nothing is written on the masters.

Without -o the file is named as the masters name theirs
(CLUSTER-NODE-TIME.anvilbak) in the current directory; -o DIR puts it in DIR;
-o - streams it to stdout.`,
		Example: `  anvil cluster backup -f cluster.yaml
  anvil cluster backup -f cluster.yaml -o /srv/backups/ --identity ~/.config/anvil/backup.key
  anvil cluster backup -f cluster.yaml -o - | age -r age1… > offsite.anvilbak.age`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output == "-" {
				if out, ok := a.out.(*os.File); ok && term.IsTerminal(int(out.Fd())) {
					return usageError("refusing to write a binary backup to a terminal: redirect stdout, or use -o FILE")
				}
			}
			ids, err := readIdentities(a, identities, false)
			if err != nil {
				return err
			}
			rep := progress.New(a.errOut, progress.ForTerminal(a.errOut))
			res, err := installer.Backup(cmd.Context(), installer.BackupOptions{
				Options: f.options(a, rep), Output: output, Stdout: a.out, Identities: ids, AllowUnencrypted: allowPlain,
			})
			rep.Close()
			if err != nil {
				return hostFailures(err)
			}
			where, w := res.Path, a.out
			if output == "-" {
				where, w = "stdout", a.errOut
			}
			verified := "every layer verified"
			if !res.Verified {
				verified = "encrypted: its header and framing verified here (give --identity to verify the content too)"
			}
			enc := "NOT encrypted"
			if res.Header.Encrypted {
				enc = "encrypted"
			}
			fmt.Fprintf(w, "backup of cluster %s at revision %d, taken on %s, written to %s: %s, %s, %s, in %.1fs\n",
				res.Header.Cluster, res.Header.Revision, res.Host, where, human.Bytes(res.Bytes), enc, verified, res.Elapsed.Seconds())
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "local file or directory, or - for stdout (default: a new file in the current directory)")
	cmd.Flags().StringSliceVar(&identities, "identity", nil, "age identity file, to verify an encrypted backup's content too (repeatable)")
	cmd.Flags().BoolVar(&allowPlain, "allow-unencrypted", false, "take the backup although the cluster file names no backup.recipients: it holds the cluster's keys in the clear")
	return cmd
}

func newClusterRestoreCmd(a *app) *cobra.Command {
	f := &clusterFlags{}
	var (
		output, identity string
		force, yes       bool
		allowUnsigned    bool
		timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "restore -f FILE BACKUP",
		Short: "Restore every master of the cluster from one backup, so no etcd member mixes snapshots",
		Long: `Verifies BACKUP here (every layer: an encrypted backup needs --identity), its
signature first: against the cluster file's backup.signingPublicKey before
any host is contacted, or, when the cluster file pins none, against the key
the masters report holding. Then, over SSH, on the cluster file's masters:

  check    each master checks it can take its part, changing nothing: the
           first master gets the backup and verifies it again
           (anvil restore --dry-run), the others check they can leave and
           that their CA is the backup's
  leave    the other masters stop their control plane and etcd member and
           set the member's data aside (anvil restore --leave), so nothing
           serves the old cluster any more
  restore  the first master restores the snapshot as a one-member cluster,
           its revision raised above anything any master served
           (anvil restore BACKUP --min-revision)
  rejoin   the other masters, one at a time, rejoin it as fresh members
           that catch up from it (anvil restore --rejoin), and finally
           every member's data is compared (etcd's HashKV)

A phase starts only when every master passed the ones before, so a refused
backup, a master that is down or another cluster's CA changes nothing. The
age identity is read from a file here and handed to the first master on its
restore's stdin: never on a command line, never written on a master.
Workers are not touched: their agents reconnect by themselves. Asks for
confirmation unless --yes.`,
		Example: `  anvil cluster restore -f cluster.yaml lab-lab-m1-20260101T020000Z.anvilbak
  anvil cluster restore -f cluster.yaml backup.anvilbak --identity ~/.config/anvil/backup.key --yes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var key []byte
			if identity != "" {
				if _, err := readIdentities(a, []string{identity}, false); err != nil {
					return err
				}
				b, err := os.ReadFile(identity)
				if err != nil {
					return fmt.Errorf("identity file: %w", err)
				}
				key = b
			}
			if !yes {
				if err := a.confirm("restore", fmt.Sprintf("This replaces the whole state of the cluster in %s with %s: everything written since that backup is lost.", f.file, args[0])); err != nil {
					return err
				}
			}
			rep := progress.New(a.errOut, progress.ForTerminal(a.errOut))
			res, err := installer.Restore(cmd.Context(), installer.RestoreOptions{
				Options: f.options(a, rep), Backup: args[0], Identity: key, Force: force, AllowUnsigned: allowUnsigned, Timeout: timeout,
			})
			rep.Close()
			if err != nil {
				return hostFailures(err)
			}
			return printOutput(a.out, output, res, func() error {
				fmt.Fprintf(a.out, "restored cluster %s from the backup taken on %s at %s on %d master(s) in %.1fs: %s restored it, ",
					res.Header.Cluster, res.Header.Node, res.Header.Created.Format(time.RFC3339), 1+len(res.Rejoined), res.Elapsed.Seconds(), res.First)
				if res.Restore != nil {
					fmt.Fprintf(a.out, "revision %d now %d (above the %d served), ", res.Restore.SnapshotRevision, res.Restore.Revision, res.ServedRevision)
				}
				if c := res.Consistency; c != nil {
					fmt.Fprintf(a.out, "and all %d etcd members hold the same data at revision %d\n", len(c.Members), c.Revision)
				} else {
					fmt.Fprintln(a.out, "a one-member etcd")
				}
				return nil
			})
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&identity, "identity", "", "age identity file that opens an encrypted backup (mode 0600)")
	cmd.Flags().BoolVar(&force, "force", false, "restore a backup of another cluster name")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "restore a backup without signature (written by an anvil from before backups were signed): anyone can write one")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().DurationVar(&timeout, "timeout", installer.DefaultTimeout, "bound on each master's restore or rejoin")
	addOutputFlag(cmd, &output)
	return cmd
}
