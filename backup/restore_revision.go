package backup

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"anvil.dev/anvil/etcd"
)

// Revisions: what the old cluster served, read from the live member and
// from its database, and how far the restored snapshot is bumped above it so
// that no revision ever goes backwards.

// revisionMargin is how far above the highest revision the old member
// served the restored cluster starts. Any positive margin keeps revisions
// from going backwards; a wide one also covers writes that a member other
// than this one may have served (a cluster restore passes MinRevision).
const revisionMargin = 10_000

// unknownRevisionBump is the bump when nothing is known of what the old
// cluster served (its member is gone and its data unreadable): the figure
// etcd's and Kubernetes' restore documentation use.
const unknownRevisionBump = 1_000_000_000

func (r *restoreRun) liveRevision(ctx context.Context) int64 {
	if !localEtcdListens() {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, err := etcd.Dial(ctx, r.o.Root)
	if err != nil {
		return 0
	}
	defer cli.Close()
	sr, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		r.log.Warn("cannot read etcd's revision before stopping it", "err", err)
		return 0
	}
	return sr.Header.Revision
}

// revisionBump is how far the snapshot's revision is raised: above the
// highest revision served (by this member, or MinRevision) by a margin;
// by a billion when nothing is known.
func revisionBump(snapRev, served, floor int64) uint64 {
	served = max(served, floor)
	if served <= 0 {
		return unknownRevisionBump
	}
	return uint64(max(served-snapRev, 0) + revisionMargin)
}

// dbRevision is the newest revision in an etcd database file (bbolt):
// the last key of the "key" bucket, whose first 8 bytes are the main
// revision, big-endian. Opening waits up to timeout for a writer's lock.
func dbRevision(file string, timeout time.Duration) (int64, error) {
	if _, err := os.Stat(file); err != nil {
		return 0, err
	}
	db, err := bolt.Open(file, 0o400, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", file, err)
	}
	defer db.Close()
	var rev int64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return fmt.Errorf("%s has no key bucket", file)
		}
		k, _ := b.Cursor().Last()
		if len(k) < 8 {
			return fmt.Errorf("%s has no revisions", file)
		}
		rev = int64(binary.BigEndian.Uint64(k[:8]))
		return nil
	})
	return rev, err
}
