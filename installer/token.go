package installer

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"anvil.dev/anvil/master"
	"anvil.dev/anvil/pki"
)

// What both join phases need from the primary. Secrets (join tokens,
// certificate keys) only ever travel on a command's stdin or stdout, or in
// 0600 files on tmpfs written from stdin: never on a command line, where
// every process list and sudo's log would show them.
//
// Every join gets a token of its own, bound to its host's name (see
// master.BootstrapToken.Node): anvil's approver lets it obtain a client
// certificate for that node alone, and only while no Node of that name
// exists. The token is deleted as soon as the join is over, whether it
// succeeded or not; the credentials phase deletes whatever a deletion
// here missed.

// tokenDeleteTimeout bounds the deletion of a join's token, which runs
// even when the join was cancelled.
const tokenDeleteTimeout = 30 * time.Second

func primaryName(r *run) string {
	if r.primary == nil {
		return "the first master"
	}
	return r.primary.Name
}

// createToken makes the join token of h, bound to h's name and valid for
// the run's TokenTTL, through the primary's admin access. It is recorded
// for the credentials phase before anything else can fail.
func (r *run) createToken(ctx context.Context, h *host, description string) (pki.Token, error) {
	acc, err := r.access(ctx)
	if err != nil {
		return pki.Token{}, err
	}
	o := master.TokenOptions{TTL: r.apply.o.TokenTTL, Description: description, Node: h.Name}
	// A few tries: making a token also re-signs cluster-info, which the
	// controller-manager's bootstrap signer and the other joins' tokens
	// may be updating at that moment (a conflict, which CreateToken
	// already retries for a few seconds). A failed try leaves no token.
	var tok pki.Token
	for try := 1; ; try++ {
		if tok, err = master.CreateToken(ctx, acc.client, o, time.Now()); err == nil {
			break
		}
		if !apierrors.IsConflict(err) || try == 3 {
			return pki.Token{}, fmt.Errorf("make the join token of %s: %w", h.Name, err)
		}
		r.log.Info("making a join token failed; trying again", "host", h.Name, "err", err)
		select {
		case <-ctx.Done():
			return pki.Token{}, ctx.Err()
		case <-time.After(time.Duration(try) * time.Second):
		}
	}
	r.apply.made.addToken(tok.ID())
	r.apply.handled(tok.Reveal())
	r.log.Debug("made a join token", "host", h.Name, "token", tok)
	return tok, nil
}

// deleteToken deletes a token the run made once what it was for is over,
// even when ctx is done (a cancelled join leaves no token either). A token
// already gone is no error. What it fails to delete stays recorded for the
// credentials phase.
func (r *run) deleteToken(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenDeleteTimeout)
	defer cancel()
	acc, err := r.access(ctx)
	if err != nil {
		return err
	}
	if err := master.DeleteToken(ctx, acc.client, id, time.Now()); err != nil && !errors.Is(err, master.ErrNoToken) {
		return fmt.Errorf("delete join token %s: %w", id, err)
	}
	r.apply.made.deletedTokens([]string{id})
	return nil
}

// withToken runs join with a fresh token for h, then deletes the token,
// whatever join returned. A failed deletion does not fail a join that
// succeeded: the credentials phase tries again.
func (r *run) withToken(ctx context.Context, h *host, description string, join func(pki.Token) (string, error)) (string, error) {
	tok, err := r.createToken(ctx, h, description)
	if err != nil {
		return "", err
	}
	res, err := join(tok)
	if derr := r.deleteToken(ctx, tok.ID()); derr != nil {
		r.log.Warn("the join token is left for the credentials phase", "host", h.Name, "err", derr)
		if err == nil {
			res += "; its token is left for the credentials phase (" + derr.Error() + ")"
		}
		return res, err
	}
	if err == nil {
		res += "; its token deleted"
	}
	return res, err
}
