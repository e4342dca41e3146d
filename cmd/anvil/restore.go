package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/internal/hostfs"
)

func newRestoreCmd(a *app) *cobra.Command {
	var (
		root, output, rejoin string
		read                 backupReadFlags
		force, dryRun, leave bool
		minRevision          int64
		timeout              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "restore FILE|- [--identity KEYFILE] | --leave | --rejoin ENDPOINT",
		Short: "Restore this master's etcd from a backup, verified before anything changes",
		Long: `Restores this master from an anvil backup. The whole backup is verified first
(every layer, the snapshot's sha256, etcd's own checksum) into a staging
directory, and refused with the reason — damaged, truncated, the wrong key,
another cluster's, a Kubernetes version anvil cannot run — before anything
on the machine changes. Then:

` + backup.RestorePhaseHelp(backup.RestoreSnapshot) + `

The restored revision is raised above anything the old cluster served and
marked compacted, so every watcher (informers, controllers) relists instead
of waiting for revisions that will never come. The old data directory (and
any file the backup's version replaced) is kept in
/var/lib/anvil/before-restore-<time>. --force restores another cluster name
or another supported Kubernetes version.

On a master whose etcd member has other voting members, restoring it alone
would fork the cluster, and restore refuses, saying how many members answer
and whether etcd still has its quorum. Restore every master at once with
'anvil cluster restore' from the workstation; it runs, on the masters:

  anvil restore --leave --force         on every other master: stop its
                                        control plane and member, set the
                                        member's data aside
  anvil restore FILE --force            on the first master: a one-member
                                        cluster holding the backup
  anvil restore --rejoin https://FIRST:2379
                                        on each other master, one at a time:
                                        rejoin as a fresh learner, catch up,
                                        become a voter, start the control plane

so no member ever holds data from two snapshots. --dry-run runs the checks
(and verifies the whole backup) and changes nothing.

The age identity comes from a file (--identity KEYFILE, which must not be
readable by group or others), or from stdin with --identity - when the
backup is a file: never from the command line or the environment.`,
		Example: `  anvil restore /var/lib/anvil/backups/lab-lab-m1-20260101T020000Z.anvilbak
  anvil restore backup.anvilbak --identity ~/.config/anvil/backup.key
  anvil restore backup.anvilbak --identity - --dry-run -o json < backup.key
  ssh vault 'cat etcd.anvilbak' | anvil restore -`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case leave && rejoin != "":
				return usageError("--leave and --rejoin are two steps: give one")
			case (leave || rejoin != "") && len(args) > 0:
				return usageError("--leave and --rejoin take no backup: the member gets the restored data from the cluster")
			case !leave && rejoin == "" && len(args) != 1:
				return usageError("give the backup to restore: anvil restore FILE|-")
			case (leave || rejoin != "") && len(read.identities) > 0:
				return usageError("--identity is for restoring a backup, not for --leave or --rejoin")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o := backup.RestoreOptions{
				Root: hostfs.Root(root), Force: force, DryRun: dryRun, MinRevision: minRevision,
				Timeout: timeout, Log: a.logger(),
			}
			switch {
			case leave:
				o.Mode = backup.RestoreLeave
			case rejoin != "":
				o.Mode, o.Endpoint = backup.RestoreRejoin, rejoin
			default:
				o.Mode, o.Name = backup.RestoreSnapshot, args[0]
				r, keys, closeFn, err := read.open(a, hostfs.Root(root), args[0])
				if err != nil {
					return err
				}
				defer closeFn()
				o.Backup, o.Keys = r, keys
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			o.Anvil = self
			task, done := a.nodeTask(hostnameOr("restore"))
			o.Task = task
			res, err := backup.Restore(cmd.Context(), o)
			done()
			if err != nil {
				return err
			}
			return printOutput(a.out, output, res, func() error { return printRestoreResult(a.out, res) })
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "prefix for every host path")
	read.add(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "restore another cluster name or supported version, or one member of several; let --leave and --rejoin go ahead without etcd's quorum")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "run the checks and verify the backup; change nothing")
	cmd.Flags().BoolVar(&leave, "leave", false, "stop this master's control plane and etcd member and set its data aside, before another master is restored")
	cmd.Flags().StringVar(&rejoin, "rejoin", "", "rejoin the cluster restored on another master, through its etcd client URL (https://ADDRESS:2379)")
	cmd.Flags().Int64Var(&minRevision, "min-revision", 0, "a revision the restored cluster must end above (anvil cluster restore passes the highest any master served)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for the control plane to be ready again")
	addOutputFlag(cmd, &output)
	return cmd
}

func printRestoreResult(w io.Writer, res *backup.RestoreResult) error {
	if res.DryRun {
		fmt.Fprintf(w, "dry run on %s: every check passed, nothing was changed\n", res.Node)
	}
	switch {
	case res.Mode == backup.RestoreLeave && !res.DryRun:
		fmt.Fprintf(w, "%s left: its control plane and etcd member are stopped (last revision served %d); rejoin it with anvil restore --rejoin once the cluster is restored\n",
			res.Node, res.ServedRevision)
	case res.Mode == backup.RestoreRejoin && !res.DryRun:
		fmt.Fprintf(w, "%s rejoined the restored cluster at revision %d; down %.1fs, took %.1fs\n", res.Node, res.Revision, res.Downtime.Seconds(), res.Elapsed.Seconds())
	case res.Mode == backup.RestoreSnapshot && res.DryRun:
		h := res.Header
		fmt.Fprintf(w, "would restore cluster %s from the backup taken on %s at %s: revision %d, then %d (bumped by %d above the %d served so far, compacted)\n",
			h.Cluster, h.Node, h.Created.Format(time.RFC3339), res.SnapshotRevision, res.Revision, res.RevisionBump, res.ServedRevision)
	case res.Mode == backup.RestoreSnapshot:
		h := res.Header
		fmt.Fprintf(w, "restored cluster %s from the backup taken on %s at %s: revision %d, now %d (bumped by %d, compacted); down %.1fs, restore took %.1fs\n",
			h.Cluster, h.Node, h.Created.Format(time.RFC3339), res.SnapshotRevision, res.Revision,
			res.RevisionBump, res.Downtime.Seconds(), res.Elapsed.Seconds())
	}
	if res.Aside != "" {
		fmt.Fprintf(w, "the previous etcd data is kept in %s; delete it when the cluster is known good\n", res.Aside)
	}
	for _, p := range res.Replaced {
		fmt.Fprintf(w, "replaced %s (the old one is in %s)\n", p, res.Aside)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}
