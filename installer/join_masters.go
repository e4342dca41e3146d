package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"anvil.dev/anvil/pki"
)

// Phase join-masters: `anvil join --control-plane` on every master that is
// not a control-plane member yet, one at a time (each changes etcd's
// membership, which must never change twice at once), each with a fresh
// token of its own, bound to its name and deleted once its join is over
// (token.go), and the certificate key of the run's one upload, both
// handed over on stdin.

// ErrHANotAvailable means the anvil on the hosts cannot join a master to
// an existing control plane yet.
var ErrHANotAvailable = errors.New("HA control-plane join is not available yet: this anvil's `anvil join` has no --control-plane; apply a cluster file with one master for now")

func planJoinMasters(r *run) plan {
	pl := plan{oneAtATime: true}
	for _, h := range r.alive() {
		if !h.IsMaster() || h == r.primary {
			continue
		}
		if h.facts.ControlPlane() {
			pl.steps = append(pl.steps, step{host: h, do: "nothing to do: already a control-plane member"})
			continue
		}
		do := fmt.Sprintf("anvil join %s --control-plane --token-file - --certificate-key-file - --ca-cert-hash <%s's CA> --node-name %s (on stdin the certificate key and a token for %s alone, deleted once the join is over)",
			r.cluster.APIServerURL(), primaryName(r), h.Name, h.Name)
		if force(h) {
			do = "undo the interrupted join (anvil reset --force --keep-binaries), then " + do + " --force"
		}
		pl.steps = append(pl.steps, step{host: h, do: do, run: func(ctx context.Context) (string, error) {
			return r.joinMaster(ctx, h)
		}})
	}
	return pl
}

// joinMaster joins h to the control plane with a token made for it alone
// and the run's certificate key, both on the join's stdin (token, then
// key, one per line), as anvil join --control-plane reads them.
func (r *run) joinMaster(ctx context.Context, h *host) (string, error) {
	v := r.apply.bundle.version
	help, err := h.client.OutputAsRoot(ctx, shellJoin([]string{anvilOn(v), "join", "--help"}))
	if err != nil {
		return "", fmt.Errorf("anvil join --help: %w", err)
	}
	switch {
	case !strings.Contains(string(help), "--control-plane"):
		return "", ErrHANotAvailable
	case !strings.Contains(string(help), "--certificate-key-file"):
		return "", errors.New("anvil join takes the certificate key only on its command line (--certificate-key), where every process list shows it; apply passes secrets only on stdin, so it needs --certificate-key-file -")
	}
	acc, err := r.access(ctx)
	if err != nil {
		return "", err
	}
	// One upload per run serves every master it joins: the key and the
	// sealed certificates are valid for an hour, and fewer credentials
	// exist at any time.
	if r.apply.certificateKey == "" {
		if r.apply.certificateKey, err = r.uploadCerts(ctx); err != nil {
			return "", err
		}
	}
	key := r.apply.certificateKey
	return r.withToken(ctx, h, "control-plane join of "+h.Name+" by anvil cluster apply", func(tok pki.Token) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, r.apply.o.Timeout+time.Minute)
		defer cancel()
		args := r.joinArgs(h, acc.caHash, "--control-plane", "--token-file", "-", "--certificate-key-file", "-")
		start := time.Now()
		script, stdin := r.joinScript(h, args, masterJoined(), undoMasterJoin(r, h), tok.Reveal(), key)
		if err := r.runLogged(ctx, h, "anvil join --control-plane", script, stdin, io.Discard); err != nil {
			return "", err
		}
		return fmt.Sprintf("joined the control plane in %s", time.Since(start).Round(100*time.Millisecond)), nil
	})
}

// undoMasterJoin is what runs before a master's join when an earlier one
// stopped half-way (force): `anvil reset`, keeping the uploaded binaries.
// Such a join may have left its etcd member, its components running as
// systemd units, and its agent; a join over them would find its own ports
// taken. Its etcd member stays in the cluster, and the join replaces it.
// Without node.json, reset takes no member out of etcd, so the rest of the
// cluster keeps its quorum whatever the member was.
func undoMasterJoin(r *run, h *host) string {
	if !force(h) {
		return ""
	}
	return shellJoin([]string{anvilOn(r.apply.bundle.version), "reset", "--force", "--keep-binaries"}) + " </dev/null >/dev/null"
}

// certificateKeyRE finds the certificate key in what `anvil init phase
// upload-certs` prints: 64 hex digits that are not a sha256:… CA hash.
var certificateKeyRE = regexp.MustCompile(`(^|[^:0-9a-f])([0-9a-f]{64})([^0-9a-f]|$)`)

// uploadCerts has the primary seal the shared certificates in the cluster
// under a fresh key (valid for an hour) and returns the key, read from the
// command's stdout. The join token upload-certs makes with it is bound to
// no node and never used: it is deleted at once (else by the credentials
// phase, like the sealed certificates).
func (r *run) uploadCerts(ctx context.Context) (string, error) {
	p := r.primary
	cmd := shellJoin([]string{anvilOn(r.apply.bundle.version), "init", "phase", "upload-certs", "-f", clusterFileOnHost, "--node", p.Name})
	var out strings.Builder
	err := r.runLogged(ctx, p, "anvil init phase upload-certs", cmd, nil, &out)
	if tok, ok := findToken(out.String()); ok {
		r.apply.made.addToken(tok.ID())
		r.apply.handled(tok.Reveal())
		if derr := r.deleteToken(ctx, tok.ID()); derr != nil {
			r.log.Warn("upload-certs' token is left for the credentials phase", "host", p.Name, "err", derr)
		}
	}
	if err != nil {
		return "", err
	}
	r.apply.made.uploadedCerts()
	m := certificateKeyRE.FindStringSubmatch(out.String())
	if m == nil {
		return "", errors.New("anvil init phase upload-certs printed no certificate key")
	}
	r.apply.handled(m[2])
	return m[2], nil
}
