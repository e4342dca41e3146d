package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/human"
	"anvil.dev/anvil/support"
)

// supportBundlePhases is `anvil cluster support-bundle`: read-only; a host
// that fails is named in the bundle, and the others go on.
func supportBundlePhases() []flowPhase {
	return []flowPhase{
		looking("connect", planConnect), // connect.go
		looking("collect", planCollect), // anvil support-bundle on each host
	}
}

// SupportBundleOptions are the inputs of SupportBundle.
type SupportBundleOptions struct {
	Options
	// Output is the archive to write (0600, atomically).
	Output string
	// Since is how far back the hosts' journals go.
	Since time.Duration
}

// SupportBundleResult is what a bundle holds.
type SupportBundleResult struct {
	Output string
	// Hosts are the hosts whose section is in the bundle.
	Hosts []string
	// Unreachable are the others, with why (as unreachable.txt says).
	Unreachable map[string]string
	Bytes       int64
}

// SupportBundle runs `anvil support-bundle` on every host of the cluster
// (the anvil apply installed there, as root) and writes their archives
// into one, a directory per host, with the hosts that could not be reached
// or could not make one named in unreachable.txt. Only the first master
// reached is asked for the cluster's Nodes and events. The output is
// written whole or not at all.
func SupportBundle(ctx context.Context, o SupportBundleOptions) (*SupportBundleResult, error) {
	if o.Output == "" {
		return nil, errors.New("no output file")
	}
	r, err := newRun(o.Options)
	if err != nil {
		return nil, err
	}
	defer r.close()
	tmp, err := os.MkdirTemp("", "anvil-support-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	r.support = &supportState{since: o.Since, dir: tmp, files: map[*host]string{}}
	if err := r.do(ctx, "support-bundle", supportBundlePhases()); ctx.Err() != nil {
		return nil, err
	}
	res := &SupportBundleResult{Output: o.Output, Unreachable: map[string]string{}}
	if err := writeBundle(o.Output, r, res); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(o.Output); err == nil {
		res.Bytes = fi.Size()
	}
	return res, nil
}

// supportState is what the collect phase leaves: each host's archive.
type supportState struct {
	since time.Duration
	dir   string
	files map[*host]string
}

func planCollect(r *run) plan {
	var pl plan
	clusterObjects := true
	for _, h := range r.alive() {
		cmd := []string{anvilOn(r.cluster.KubernetesVersion), "support-bundle", "-o", "-", "--name", h.Name}
		if r.support.since > 0 {
			cmd = append(cmd, "--since", r.support.since.String())
		}
		// One master is enough for the cluster's Nodes and events.
		if h.IsMaster() && clusterObjects {
			cmd = append(cmd, "--cluster-objects")
			clusterObjects = false
		}
		pl.steps = append(pl.steps, step{host: h, do: "anvil support-bundle", check: true, run: func(ctx context.Context) (string, error) {
			return r.collect(ctx, h, shellJoin(cmd))
		}})
	}
	return pl
}

// collect streams one host's archive into a file of its own: hosts run in
// parallel, and the bundle takes them in file order at the end.
func (r *run) collect(ctx context.Context, h *host, cmd string) (string, error) {
	f, err := os.CreateTemp(r.support.dir, "host-*.tar.gz")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := r.runLogged(ctx, h, "anvil support-bundle", cmd, nil, f); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	fi, err := os.Stat(f.Name())
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.support.files[h] = f.Name()
	r.mu.Unlock()
	return human.Bytes(fi.Size()), nil
}

// writeBundle writes the hosts' archives, in file order, and
// unreachable.txt into out, atomically.
func writeBundle(out string, r *run, res *SupportBundleResult) error {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(func() error {
			b := support.NewBundle(pw, time.Now())
			var why []string
			for _, h := range r.hosts {
				p, ok := r.support.files[h]
				if !ok {
					reason := "not collected"
					var he *HostError
					if errors.As(h.err, &he) {
						reason = he.Phase + ": " + he.Err.Error()
					} else if h.err != nil {
						reason = h.err.Error()
					}
					res.Unreachable[h.Name] = reason
					why = append(why, fmt.Sprintf("%s (%s, %s): %s", h.Name, h.Role, h.Address, strings.ReplaceAll(reason, "\n", " ")))
					continue
				}
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				err = b.AddHost(h.Name, f)
				f.Close()
				if err != nil {
					return err
				}
				res.Hosts = append(res.Hosts, h.Name)
			}
			if len(why) > 0 {
				if err := b.AddFile(support.UnreachableFile, []byte(strings.Join(why, "\n")+"\n")); err != nil {
					return err
				}
			}
			return b.Close()
		}())
	}()
	err := fsutil.WriteFrom(out, pr, 0o600, 0o700)
	pr.CloseWithError(err) // unblocks the writer when WriteFrom gave up
	<-done
	if err != nil {
		return fmt.Errorf("write the support bundle: %w", err)
	}
	return nil
}
