package installer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"anvil.dev/anvil/internal/sshx"
	"anvil.dev/anvil/pki"
)

// What both join phases need from the primary. Secrets (join tokens,
// certificate keys) only ever travel on a command's stdin or stdout, or in
// 0600 files on tmpfs written from stdin: never on a command line, where
// every process list and sudo's log would show them.

func primaryName(r *run) string {
	if r.primary == nil {
		return "the first master"
	}
	return r.primary.Name
}

// createToken runs `anvil token create` on the primary: a bootstrap token
// that expires with the run's TokenTTL, read from stdout.
func (r *run) createToken(ctx context.Context, description string) (pki.Token, error) {
	p := r.primary
	cmd := fmt.Sprintf("%s token create --ttl %s --description %s", anvilOn(r.apply.bundle.version), r.apply.o.TokenTTL, sshx.ShellQuote(description))
	var out strings.Builder
	// A few tries: making a token also re-signs cluster-info, which the
	// controller-manager's bootstrap signer may be updating at that moment
	// (a conflict). A failed try leaves at most a token that expires soon.
	var err error
	for try := range 3 {
		out.Reset()
		if err = r.runLogged(ctx, p, "anvil token create", cmd, nil, &out); err == nil {
			break
		}
		var ce *CommandError
		if !errors.As(err, &ce) || try == 2 {
			return pki.Token{}, err
		}
		r.log.Info("making a join token failed; trying again", "host", p.Name, "err", err)
		select {
		case <-ctx.Done():
			return pki.Token{}, ctx.Err()
		case <-time.After(time.Duration(try+1) * time.Second):
		}
	}
	t, err := pki.ParseToken(strings.TrimSpace(lastLine(out.String())))
	if err != nil {
		return pki.Token{}, fmt.Errorf("anvil token create printed no token: %w", err)
	}
	r.apply.made.addToken(t.ID())
	r.apply.handled(t.Reveal())
	r.log.Debug("made a join token", "host", p.Name, "token", t)
	return t, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
