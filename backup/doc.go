// Package backup takes, stores, inspects and restores anvil's etcd backups.
//
// What it owns:
//   - taking a backup of this master (Backup, BackupToFile, BackupToDir, Take):
//     an etcd snapshot streamed through etcd's maintenance API together with
//     the files a master cannot be rebuilt without (CAs and their keys, the
//     service-account key pair, the Secrets encryption config, the cluster
//     file, the backup signing key pair), written as one envelope (package
//     backup/envelope) signed with this master's backup signing key, 0600, and
//     verified before the file appears; a backup without age recipients is
//     refused unless --allow-unencrypted or backup.allowUnencrypted allows it;
//   - the store: backup.dir's listing by header, and pruning to backup.retain
//     (ListBackups, PruneBackups);
//   - the process layout's backup timer (RunBackupSchedule, with
//     internal/calendar), which takes the backup only on the etcd leader;
//   - whose backups a reader accepts (LocalTrust: --signing-key, this
//     master's own key, the cluster file's backup.signingPublicKey);
//   - reading backups: inspection, verification, export of the plain etcd
//     snapshot and of the carried files (InspectBackup, ExportSnapshot,
//     ExportFiles: only BackupFiles, with anvil's modes, the CA checked
//     against the header, nothing written unless all is), and age identity
//     files (ReadIdentities);
//   - restore (Restore): the phases of a snapshot restore and of the other
//     masters' part in a cluster restore (--leave, --rejoin), each verifying
//     everything before it changes anything.
//
// It starts and stops components only through master.ControlPlane, joins
// etcd only through etcd.Learner, and never talks SSH: the workstation's
// `anvil cluster backup|restore` (package installer) runs this package's
// commands on the masters.
package backup
