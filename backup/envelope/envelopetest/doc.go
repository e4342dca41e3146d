// Package envelopetest holds what tests of backups share: age identities
// and a way to edit a backup's clear header the way an attacker would.
//
// It is for tests only.
package envelopetest
