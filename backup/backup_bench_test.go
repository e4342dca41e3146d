package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"

	"anvil.dev/anvil/backup"
	"anvil.dev/anvil/backup/envelope/envelopetest"
	"anvil.dev/anvil/etcd"
	"anvil.dev/anvil/internal/benchreport"
	"anvil.dev/anvil/master/mastertest"
)

// BenchmarkBackupRestore measures what the issue asks on a real control
// plane whose etcd holds at least 256 MB: how fast `anvil backup` streams
// the database into a backup file (MB of database per second, plain and
// encrypted, beside stock etcd's snapshot save on the same member), the
// backup's peak memory (it streams), and restore-to-ready: from the start
// of `anvil restore` until the apiserver, controller-manager and scheduler
// are ready and lead again.
//
// The values are random bytes in base64, about as compressible as real
// etcd data with encrypted Secrets in it (zstd keeps ~75%).
func BenchmarkBackupRestore(b *testing.B) {
	const minDB = 256 << 20
	cp := mastertest.Start(b, mastertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cli, err := etcd.Dial(ctx, cp.Root, cp.EtcdEndpoint())
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()

	// Fill etcd through its client, four writers, 1 MiB values.
	start := time.Now()
	var dbSize int64
	for round := 0; dbSize < minDB; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for w := range 4 {
			wg.Go(func() {
				raw := make([]byte, 3<<18) // base64 makes it 1 MiB
				for i := range 16 {
					rand.Read(raw)
					if _, err := cli.Put(ctx, fmt.Sprintf("/bench/%03d/%d/%02d", round, w, i), base64.StdEncoding.EncodeToString(raw)); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		st, err := cli.Status(ctx, cp.EtcdEndpoint())
		if err != nil {
			b.Fatal(err)
		}
		dbSize = st.DbSize
	}
	b.Logf("loaded etcd to %.0f MB in %s", float64(dbSize)/1e6, time.Since(start).Round(time.Millisecond))
	// The kernel is still writing the 300 MB just loaded back to disk; a
	// real cluster's database was not written in the last seconds.
	syscall.Sync()
	dir := b.TempDir()
	id := envelopetest.NewIdentity(b)
	keyFile := filepath.Join(dir, "id.key")
	if err := os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}

	// Stock etcd: the client's own snapshot save, as etcdctl does it.
	stock := filepath.Join(dir, "stock.db")
	stockSave := func() float64 {
		start := time.Now()
		if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), *cliConfig(b, cp), stock); err != nil {
			b.Fatal(err)
		}
		os.Remove(stock)
		return time.Since(start).Seconds()
	}

	// anvil's backup, measured as the stock save is: in this process,
	// through the same endpoint, from the start of the stream to the file
	// synced and renamed into place (its Elapsed also covers reading the
	// PKI, the member list and the status).
	inProcess := func(name string, recipients []string) (float64, *backup.BackupResult) {
		res, err := backup.BackupToFile(ctx, backup.BackupOptions{
			Root: cp.Root, Endpoint: cp.EtcdEndpoint(), Recipients: recipients, AllowUnencrypted: len(recipients) == 0, Log: slog.New(slog.DiscardHandler),
		}, filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(res.Path)
		return res.Elapsed.Seconds(), res
	}
	// Three rounds, each the three ways in turn, so that none of them is
	// always the first (the first stream after the load is the slowest);
	// the figures are the medians.
	var stockRuns, plainRuns, encRuns []float64
	var encRes *backup.BackupResult
	for range 3 {
		stockRuns = append(stockRuns, stockSave())
		secs, _ := inProcess("plain.anvilbak", nil)
		plainRuns = append(plainRuns, secs)
		secs, encRes = inProcess("enc.anvilbak", []string{id.Recipient().String()})
		encRuns = append(encRuns, secs)
	}
	stockSecs, plainSecs, encSecs := median(stockRuns), median(plainRuns), median(encRuns)
	b.Logf("seconds per stream: stock %.2f, plain %.2f, encrypted %.2f", stockRuns, plainRuns, encRuns)

	// The command, end to end (process start included), for its memory.
	plain, enc := filepath.Join(dir, "plain.anvilbak"), filepath.Join(dir, "enc.anvilbak")
	cmdPlainSecs, plainRSS := timedAnvil(b, ctx, cp, "backup", "--root", string(cp.Root), "-o", plain, "--allow-unencrypted")
	cmdEncSecs, encRSS := timedAnvil(b, ctx, cp, "backup", "--root", string(cp.Root), "-o", enc, "--recipient", id.Recipient().String())
	mb := float64(dbSize) / 1e6
	benchreport.Report(b, benchreport.Figure{
		Name: "backup MB/s (plain, 256+ MB db, median of 3)", Value: mb / plainSecs, Unit: "MB/s", Anchor: 200, Better: benchreport.Higher,
		Note: fmt.Sprintf("target; etcd snapshots ~135 MB/s; stock etcd snapshot save here %.0f MB/s; `anvil backup` end to end %.0f MB/s; db %.0f MB",
			mb/stockSecs, mb/cmdPlainSecs, mb),
	})
	benchreport.Report(b, benchreport.Figure{
		Name: "backup MB/s (age-encrypted, median of 3)", Value: mb / encSecs, Unit: "MB/s", Anchor: 200, Better: benchreport.Higher,
		Note: fmt.Sprintf("target; `anvil backup` end to end %.0f MB/s; backup file %.0f MB (%.0f%% of the db)",
			mb/cmdEncSecs, float64(encRes.Bytes)/1e6, 100*float64(encRes.Bytes)/float64(dbSize)),
	})
	benchreport.Report(b, benchreport.Figure{
		Name: "backup peak RSS", Value: max(plainRSS, encRSS), Unit: "MiB", Anchor: 128,
		Note: "budget: the snapshot streams, never held in memory",
	})

	// Restore the encrypted backup: the whole command, until ready.
	restoreSecs, _ := timedAnvil(b, ctx, cp, "restore", "--root", string(cp.Root), enc, "--identity", keyFile)
	benchreport.Report(b, benchreport.Figure{
		Name: "restore-to-ready (256+ MB db)", Value: restoreSecs, Unit: "s", Anchor: 15,
		Note: "target; verify, stop, etcd restore with revision bump, start, leases held",
	})
	if st := cp.Status(b); !st.Healthy {
		b.Errorf("not healthy after the restore: %+v", st)
	}
}

// median is the middle of xs, which it leaves in their order.
func median(xs []float64) float64 {
	return slices.Sorted(slices.Values(xs))[len(xs)/2]
}

// timedAnvil runs anvil in the control plane's namespace and returns its
// wall time and peak RSS (MiB).
func timedAnvil(b *testing.B, ctx context.Context, cp *mastertest.ControlPlane, args ...string) (float64, float64) {
	b.Helper()
	cmd := cp.NS.Command(ctx, cp.Anvil, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	secs := time.Since(start).Seconds()
	if err != nil {
		b.Fatalf("anvil %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	b.Logf("anvil %s: %.2fs\n%s", args[0], secs, out.String())
	rss := 0.0
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = float64(ru.Maxrss) / 1024
	}
	return secs, rss
}

// cliConfig is a client configuration for the control plane's etcd with
// the healthcheck client certificate, for etcd's own snapshot code.
func cliConfig(b *testing.B, cp *mastertest.ControlPlane) *clientv3.Config {
	b.Helper()
	dir := cp.Root.PKI()
	tc, err := (transport.TLSInfo{
		CertFile:      filepath.Join(dir, "etcd", "healthcheck-client.crt"),
		KeyFile:       filepath.Join(dir, "etcd", "healthcheck-client.key"),
		TrustedCAFile: filepath.Join(dir, "etcd", "ca.crt"),
	}).ClientConfig()
	if err != nil {
		b.Fatal(err)
	}
	return &clientv3.Config{Endpoints: []string{cp.EtcdEndpoint()}, TLS: tc, DialTimeout: 5 * time.Second}
}
