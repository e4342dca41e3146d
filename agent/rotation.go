package agent

import (
	"context"
	"math/rand/v2"
	"time"

	"anvil.dev/anvil/internal/backoff"
	"anvil.dev/anvil/pki"
)

// Client certificate rotation through a CSR, before the certificate expires.

// rotationLoop renews the client certificate through a CSR when 70–90% of
// its life has passed (the kubelet's rule), retrying with backoff; the new
// certificate is used by the next connection and written to the
// kubeconfig, so a restart keeps it.
func (a *Agent) rotationLoop(ctx context.Context) {
	bo := backoff.New(5*time.Second, 5*time.Minute)
	for {
		leaf := a.certs.get().Leaf
		deadline := rotationDeadline(leaf.NotBefore, leaf.NotAfter)
		for wait := time.Until(deadline); wait > 0; wait = time.Until(deadline) {
			// Wake at least hourly: the clock may jump, a machine may sleep.
			if !backoff.Sleep(ctx, min(wait, time.Hour)) {
				return
			}
		}
		for {
			err := a.RotateCertificate(ctx)
			if err == nil {
				bo.Reset()
				break
			}
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			a.log.Error("client certificate renewal failed; retrying", "in", d.Round(time.Second), "expires", leaf.NotAfter, "err", err)
			if !backoff.Sleep(ctx, d) {
				return
			}
		}
	}
}

// rotationDeadline is a random point between 70% and 90% of a
// certificate's life.
func rotationDeadline(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	return notBefore.Add(time.Duration(float64(life) * (0.7 + 0.2*rand.Float64())))
}

// RotateCertificate renews the client certificate now: a new key, a CSR
// made with the current certificate (the controller-manager approves a
// node's own renewal), the kubeconfig rewritten, the new certificate
// used from the next connection on.
func (a *Agent) RotateCertificate(ctx context.Context) error {
	key, err := pki.NewKey("")
	if err != nil {
		return err
	}
	certPEM, err := requestNodeCertificate(ctx, a.cli, csrRequest{NodeName: a.cfg.NodeName, Key: key, Wait: 5 * time.Minute, Log: a.log})
	a.o.Metrics.observeRotation(err)
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	creds := a.creds
	creds.CertPEM, creds.KeyPEM = certPEM, keyPEM
	tc, err := creds.cert()
	if err != nil {
		return err
	}
	if a.o.Credentials == nil {
		if err := writeKubeconfig(a.cfg.Kubeconfig, a.cfg.NodeName, creds); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.creds = creds
	a.mu.Unlock()
	a.certs.set(tc)
	a.o.Metrics.setCertExpiry(tc.Leaf.NotAfter)
	a.cli.close()
	a.log.Info("client certificate renewed", "expires", tc.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// ClientCertificate is the client certificate in use.
func (a *Agent) ClientCertificate() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.creds.CertPEM
}
