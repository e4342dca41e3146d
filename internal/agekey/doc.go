// Package agekey makes the age key pair anvil's backups are encrypted to:
// the identity in a file only its owner reads, the recipient for the
// cluster file's backup.recipients. `anvil config init` and the lab make
// one by default, so that no cluster starts with backups in the clear.
package agekey
