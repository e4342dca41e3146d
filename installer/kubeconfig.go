package installer

import (
	"context"
	"errors"
	"fmt"
	"os"

	"anvil.dev/anvil/internal/fsutil"
)

// Phase kubeconfig: the admin kubeconfig from the primary, written on the
// workstation (0600), replaced only when it changed.

func planKubeconfig(r *run) plan {
	p, dst := r.primary, r.apply.o.Kubeconfig
	if p == nil || p.failed() || dst == "" {
		return plan{}
	}
	if have, err := os.ReadFile(dst); err == nil && p.facts.AdminKubeconfigSHA256 != "" && sha256Hex(have) == p.facts.AdminKubeconfigSHA256 && mode(dst) == 0o600 {
		return plan{steps: []step{{host: p, do: fmt.Sprintf("nothing to do: %s is %s's admin kubeconfig", dst, p.Name)}}}
	}
	return plan{steps: []step{{host: p, do: fmt.Sprintf("write the admin kubeconfig to %s (0600)", dst), run: func(ctx context.Context) (string, error) {
		acc, err := r.access(ctx)
		if err != nil {
			return "", err
		}
		out, err := fsutil.EnsureFile(dst, acc.admin, 0o600, 0o700)
		if err != nil {
			return "", fmt.Errorf("write kubeconfig %s: %w", dst, err)
		}
		return fmt.Sprintf("%s %s", dst, out), nil
	}}}}
}

// mode is a file's permissions, or 0 when it cannot be looked at.
func mode(path string) os.FileMode {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Mode().Perm()
}

// Kubeconfig returns the admin kubeconfig of the cluster in o, read from
// the first master that has one.
func Kubeconfig(ctx context.Context, o Options) ([]byte, error) {
	r, err := newRun(o)
	if err != nil {
		return nil, err
	}
	defer r.close()
	var errs []error
	for _, h := range r.hosts {
		if !h.IsMaster() {
			continue
		}
		cfg, err := r.sshConfig(h.Host)
		if err != nil {
			return nil, err
		}
		c, err := r.dial(ctx, cfg)
		if err != nil {
			errs = append(errs, &HostError{Host: h.Name, Phase: "connect", Err: err})
			continue
		}
		h.client = c
		out, err := c.OutputAsRoot(ctx, "cat "+adminKubeconfigOnHost)
		if err == nil {
			return out, nil
		}
		errs = append(errs, &HostError{Host: h.Name, Phase: "kubeconfig", Err: err})
	}
	if len(errs) == 0 {
		return nil, errors.New("the cluster file has no master")
	}
	return nil, fmt.Errorf("no master gave its admin kubeconfig: %w", errors.Join(errs...))
}
