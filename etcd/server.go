package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"anvil.dev/anvil/internal/grpccodec"
	"anvil.dev/anvil/internal/sdnotify"
)

// ServerOptions configures `anvil etcd`.
type ServerOptions struct {
	// ConfigFile is an etcd configuration file in etcd's own keys
	// (/etc/anvil/etcd.yaml), so any etcd tool can audit it.
	ConfigFile string
	// ReadyTimeout bounds the wait for the member to join its cluster and
	// serve. A member that cannot reach quorum exits after it, so that its
	// supervisor restarts it with backoff and says so.
	ReadyTimeout time.Duration
	Log          *slog.Logger
}

// ErrStopped means the member stopped by itself, for instance because it
// was removed from the cluster.
var ErrStopped = errors.New("etcd member stopped by itself")

// Serve runs the embedded etcd member until ctx ends (a clean stop) or the
// member fails. The life cycle:
//
//	start ──► wait ReadyNotify ──► READY=1, watchdog ──► serve
//	  │            │ timeout / Err()                      │ ctx done: STOPPING=1, Close
//	  └► error     └► error (supervisor restarts)         └► Err() or self-stop: error
func Serve(ctx context.Context, o ServerOptions) error {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "etcd")
	cfg, err := embed.ConfigFromFile(o.ConfigFile)
	if err != nil {
		return fmt.Errorf("read etcd config %s: %w", o.ConfigFile, err)
	}
	if err := checkSecurity(cfg, o.ConfigFile); err != nil {
		return err
	}
	cfg.GRPCAdditionalServerOptions = append(cfg.GRPCAdditionalServerOptions, grpccodec.ServerOption())
	// etcd creates its data directory 0700 but accepts a looser existing
	// one with only a warning; anvil refuses to serve keys from it.
	if fi, err := os.Stat(cfg.Dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(cfg.Dir, 0o700); err != nil {
			return fmt.Errorf("etcd data directory %s is mode %v and cannot be made 0700: %w", cfg.Dir, fi.Mode().Perm(), err)
		}
	}
	timeout := o.ReadyTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	log.Info("starting etcd", "name", cfg.Name, "data-dir", cfg.Dir, "cluster-state", cfg.ClusterState)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd (config %s): %w", o.ConfigFile, err)
	}
	defer func() {
		sdnotify.Stopping()
		e.Close()
		log.Info("etcd stopped")
	}()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("etcd failed while starting: %w", err)
	case <-timer.C:
		return fmt.Errorf("etcd member %s did not become ready within %s: it could not reach a quorum of its cluster (%s)",
			cfg.Name, timeout, cfg.InitialCluster)
	case <-ctx.Done():
		return nil
	}
	log.Info("etcd ready", "member", e.Server.MemberID().String(), "learner", e.Server.IsLearner())
	sdnotify.Ready("serving as member " + cfg.Name)
	sdnotify.Watchdog(ctx, func() bool {
		select {
		case <-e.Server.StoppingNotify():
			return false
		default:
			return true
		}
	})
	select {
	case <-ctx.Done():
		log.Info("stopping etcd")
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd failed: %w", err)
	case <-e.Server.StopNotify():
		return ErrStopped
	}
}

// checkSecurity refuses a configuration that would serve etcd without
// mutual TLS: every client and peer must present a certificate from etcd's
// own CA, and etcd must never make up its own certificates.
func checkSecurity(cfg *embed.Config, file string) error {
	var problems []string
	ci, pi := cfg.ClientTLSInfo, cfg.PeerTLSInfo
	if !ci.ClientCertAuth {
		problems = append(problems, "client-transport-security.client-cert-auth must be true")
	}
	if ci.TrustedCAFile == "" || ci.CertFile == "" || ci.KeyFile == "" {
		problems = append(problems, "client-transport-security needs cert-file, key-file and trusted-ca-file")
	}
	if !pi.ClientCertAuth {
		problems = append(problems, "peer-transport-security.client-cert-auth must be true")
	}
	if pi.TrustedCAFile == "" || pi.CertFile == "" || pi.KeyFile == "" {
		problems = append(problems, "peer-transport-security needs cert-file, key-file and trusted-ca-file")
	}
	if cfg.ClientAutoTLS || cfg.PeerAutoTLS {
		problems = append(problems, "auto-tls must be off")
	}
	for _, u := range slices.Concat(cfg.ListenClientUrls, cfg.ListenClientHttpUrls, cfg.ListenPeerUrls) {
		if u.Scheme != "https" && u.Scheme != "unixs" {
			problems = append(problems, fmt.Sprintf("%s is not https", u.String()))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("etcd config %s is not secure: %s", file, strings.Join(problems, "; "))
	}
	return nil
}
