package supervise

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"anvil.dev/anvil/component"
)

// Prober checks the health endpoints components declare. One Prober keeps
// one HTTP client (and its connections) per probe, so polling every few
// hundred milliseconds during init costs no new TLS handshakes.
type Prober struct {
	mu      sync.Mutex
	clients map[component.Probe]*http.Client
}

// NewProber returns an empty Prober.
func NewProber() *Prober { return &Prober{clients: map[component.Probe]*http.Client{}} }

// Check does one probe: nil when the endpoint answers 200 within timeout.
func (p *Prober) Check(ctx context.Context, pr component.Probe, timeout time.Duration) error {
	c, err := p.client(pr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pr.URL, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", pr.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", pr.URL, resp.Status, firstLines(string(body), 3))
	}
	return nil
}

func (p *Prober) client(pr component.Probe) (*http.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[pr]; ok {
		return c, nil
	}
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second}
	if strings.HasPrefix(pr.URL, "https://") {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: pr.InsecureSkipVerify}
		if pr.CAFile != "" {
			b, err := os.ReadFile(pr.CAFile)
			if err != nil {
				return nil, fmt.Errorf("probe %s: read CA: %w", pr.URL, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("probe %s: no certificate in %s", pr.URL, pr.CAFile)
			}
			cfg.RootCAs = pool
		}
		if pr.ClientCertFile != "" {
			cert, err := tls.LoadX509KeyPair(pr.ClientCertFile, pr.ClientKeyFile)
			if err != nil {
				return nil, fmt.Errorf("probe %s: client certificate: %w", pr.URL, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		tr.TLSClientConfig = cfg
	}
	c := &http.Client{Transport: tr}
	p.clients[pr] = c
	return c, nil
}

// Close drops the kept connections.
func (p *Prober) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		c.CloseIdleConnections()
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(strings.TrimSpace(s), "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}
