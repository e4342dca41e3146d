package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"anvil.dev/anvil/api/v1alpha1"
	"anvil.dev/anvil/internal/fsutil"
	"anvil.dev/anvil/internal/sshx"
)

// Phase connect: an SSH connection to every host, through its bastion when
// it has one, with host keys checked strictly, and a check that the login
// can become root (sudo -n) when it is not root itself.

func planConnect(r *run) plan {
	var pl plan
	for _, h := range r.alive() {
		pl.steps = append(pl.steps, step{host: h, do: describeSSH(h.Host), run: func(ctx context.Context) (string, error) {
			return r.connect(ctx, h)
		}})
	}
	return pl
}

func describeSSH(h v1alpha1.Host) string {
	s := fmt.Sprintf("ssh %s@%s", h.SSH.User, net.JoinHostPort(h.Address.String(), strconv.Itoa(int(h.SSH.Port))))
	if b := h.SSH.Bastion; b != nil {
		s += fmt.Sprintf(" via %s@%s", b.User, net.JoinHostPort(b.Address, strconv.Itoa(int(b.Port))))
	}
	if h.SSH.Sudo != nil && *h.SSH.Sudo {
		s += " (sudo -n)"
	}
	return s
}

func (r *run) connect(ctx context.Context, h *host) (string, error) {
	start := time.Now()
	cfg, err := r.sshConfig(h.Host)
	if err != nil {
		return "", err
	}
	c, err := r.dial(ctx, cfg)
	if err != nil {
		return "", err
	}
	if err := c.CheckSudo(ctx); err != nil {
		c.Close()
		return "", err
	}
	h.client = c
	return fmt.Sprintf("connected in %s", time.Since(start).Round(time.Millisecond)), nil
}

// dial connects; with AcceptNewHostKeys an unknown host (or bastion) has
// its key added to its known_hosts file and is dialled again, which checks
// the key it offers then against the one just recorded.
func (r *run) dial(ctx context.Context, cfg sshx.Config) (*sshx.Client, error) {
	for range 3 {
		c, err := sshx.Dial(ctx, cfg)
		var unknown *sshx.UnknownHostError
		if !errors.As(err, &unknown) {
			return c, err
		}
		if !r.o.AcceptNewHostKeys {
			return nil, fmt.Errorf("%w (or re-run with --accept-new-host-keys to add it)", err)
		}
		if err := r.trust(unknown); err != nil {
			return nil, err
		}
		r.log.Info("added a new host key", "host", unknown.Host, "fingerprint", unknown.Fingerprint, "known_hosts", unknown.KnownHosts)
	}
	return nil, errors.New("host key still unknown after adding it to known_hosts")
}

// trust appends the key an unknown host offered to its known_hosts file,
// unless another connection of this run (a shared bastion) just did.
func (r *run) trust(e *sshx.UnknownHostError) error {
	r.knownHostsMu.Lock()
	defer r.knownHostsMu.Unlock()
	if cb, err := knownhosts.New(e.KnownHosts); err == nil {
		if cb(e.Host, &net.TCPAddr{IP: net.IPv4zero}, e.Key) == nil {
			return nil
		}
	}
	if err := sshx.AppendKnownHosts(e.KnownHosts, []sshx.KnownHost{{Addresses: []string{e.Host}, Key: e.Key}}); err != nil {
		return fmt.Errorf("add %s to %s: %w", e.Host, e.KnownHosts, err)
	}
	return nil
}

// sshConfig is how to reach h: its own ssh block, which Default already
// merged with the cluster-wide one.
func (r *run) sshConfig(h v1alpha1.Host) (sshx.Config, error) {
	s := h.SSH
	kh, err := r.knownHostsFile(s.KnownHosts)
	if err != nil {
		return sshx.Config{}, err
	}
	cfg := sshx.Config{
		Addr:       net.JoinHostPort(h.Address.String(), strconv.Itoa(int(s.Port))),
		User:       s.User,
		KnownHosts: kh,
		Timeout:    r.o.ConnectTimeout,
		Sudo:       s.Sudo != nil && *s.Sudo,
		Attempts:   connectAttempts,
	}
	if cfg.IdentityFiles, cfg.Signers, err = r.keys(s.IdentityFile); err != nil {
		return sshx.Config{}, err
	}
	if b := s.Bastion; b != nil {
		jump := sshx.Config{
			Addr:       net.JoinHostPort(b.Address, strconv.Itoa(int(b.Port))),
			User:       b.User,
			KnownHosts: kh,
			Timeout:    r.o.ConnectTimeout,
		}
		id := b.IdentityFile
		if id == "" {
			id = s.IdentityFile
		}
		if jump.IdentityFiles, jump.Signers, err = r.keys(id); err != nil {
			return sshx.Config{}, fmt.Errorf("bastion %s: %w", b.Address, err)
		}
		cfg.Jump = &jump
	}
	return cfg, nil
}

// keys are the identity file (when set) and the ssh-agent's keys (when
// there is an agent); at least one is needed.
func (r *run) keys(identityFile string) ([]string, []ssh.Signer, error) {
	var files []string
	if identityFile != "" {
		p, err := r.localPath(identityFile)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, p)
	}
	signers, err := r.agentSigners()
	if err != nil && len(files) == 0 {
		return nil, nil, fmt.Errorf("no SSH key: the cluster file names no identityFile, and %w", err)
	}
	return files, signers, nil
}

// agentSigners connects to ssh-agent once per run.
func (r *run) agentSigners() ([]ssh.Signer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agent == nil {
		if r.o.AgentSocket == "" {
			return nil, errors.New("no ssh-agent is running (SSH_AUTH_SOCK is not set)")
		}
		a, err := sshx.DialAgent(r.o.AgentSocket)
		if err != nil {
			return nil, err
		}
		r.agent = a
	}
	return r.agent.Signers()
}

// knownHostsFile resolves the known_hosts path; with AcceptNewHostKeys a
// missing file is created empty (0600), to be filled as hosts are met.
func (r *run) knownHostsFile(path string) (string, error) {
	p, err := r.localPath(path)
	if err != nil {
		return "", err
	}
	_, err = os.Stat(p)
	switch {
	case err == nil:
		return p, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("known_hosts: %w", err)
	case !r.o.AcceptNewHostKeys:
		return "", fmt.Errorf("known_hosts file %s does not exist: add the hosts' keys to it, or re-run with --accept-new-host-keys", p)
	}
	r.knownHostsMu.Lock()
	defer r.knownHostsMu.Unlock()
	if ok, _ := fsutil.Exists(p); !ok {
		if err := fsutil.WriteFile(p, nil, 0o600, 0o700); err != nil {
			return "", fmt.Errorf("create %s: %w", p, err)
		}
	}
	return p, nil
}

// localPath expands ~ and makes a relative path relative to the cluster
// file's directory, where the person who wrote it meant it.
func (r *run) localPath(p string) (string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("expand %s: %w", p, err)
		}
		return filepath.Join(home, strings.TrimPrefix(p, "~")), nil
	}
	if !filepath.IsAbs(p) && r.o.ClusterFile != "" {
		return filepath.Join(filepath.Dir(r.o.ClusterFile), p), nil
	}
	return p, nil
}
