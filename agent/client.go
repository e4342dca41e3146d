package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"anvil.dev/anvil/internal/buildinfo"
	"anvil.dev/anvil/pki"
)

// Content types the agent sends.
const (
	contentJSON           = "application/json"
	contentMergePatch     = "application/merge-patch+json"
	contentStrategicPatch = "application/strategic-merge-patch+json"
)

// maxResponse bounds what the agent reads from an apiserver: its own Node,
// Lease or CSR are a few KiB.
const maxResponse = 8 << 20

// apiClient is the agent's small REST client: JSON over HTTP/2 to one of
// several apiservers, failing over to the next when one does not answer.
// It deliberately avoids client-go's typed clientset and scheme: the agent
// makes a handful of calls, and thousands of agents run in one benchmark
// process.
type apiClient struct {
	// servers may be replaced while requests run (setServers); cur is the
	// index, modulo its length, of the one that last answered.
	servers atomic.Pointer[[]string]
	cur     atomic.Int64
	tr      *http.Transport
	hc      *http.Client
	// token authenticates a bootstrap client; zero for certificate clients.
	token     pki.Token
	userAgent string
	log       *slog.Logger
	// onFailover is told when a request moved to another server.
	onFailover func(from, to string)
}

type clientOptions struct {
	Servers []string
	// CAs are the only roots the server certificate may chain to.
	CAs *x509.CertPool
	// ClientCert returns the current client certificate (nil for none);
	// it is asked at every handshake, so a renewed certificate is used by
	// the next connection.
	ClientCert func() *tls.Certificate
	// Token is sent as a bearer token (bootstrap only).
	Token      pki.Token
	UserAgent  string
	Log        *slog.Logger
	OnFailover func(from, to string)
}

func newAPIClient(o clientOptions) (*apiClient, error) {
	if len(o.Servers) == 0 {
		return nil, errors.New("no apiserver URL")
	}
	if o.CAs == nil {
		return nil, errors.New("no CA to verify the apiserver with")
	}
	tc := &tls.Config{RootCAs: o.CAs, MinVersion: tls.VersionTLS12}
	if o.ClientCert != nil {
		get := o.ClientCert
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := get(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		}
	}
	tr := &http.Transport{
		TLSClientConfig:     tc,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 2,
		// A connection that silently died (a master that lost power, a
		// cut link) is found by pings rather than by a request timing out
		// on it again and again.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ua := o.UserAgent
	if ua == "" {
		ua = "anvil-agent/" + buildinfo.Version()
	}
	c := &apiClient{
		tr:         tr,
		hc:         &http.Client{Transport: tr},
		token:      o.Token,
		userAgent:  ua,
		log:        log,
		onFailover: o.OnFailover,
	}
	servers := slices.Clone(o.Servers)
	c.servers.Store(&servers)
	return c, nil
}

// setServers replaces the servers to try, keeping the one in use first in
// line when it is still among them.
func (c *apiClient) setServers(servers []string) {
	if len(servers) == 0 {
		return
	}
	inUse := c.server()
	servers = slices.Clone(servers)
	c.servers.Store(&servers)
	c.cur.Store(int64(max(0, slices.Index(servers, inUse))))
}

// serverList is the servers to try, in order.
func (c *apiClient) serverList() []string { return *c.servers.Load() }

// StatusError is an apiserver's answer other than success, with its
// metav1.Status when the server sent one.
type StatusError struct {
	Server string
	Method string
	Path   string
	Code   int
	Reason metav1.StatusReason
	// Message is the server's message, cut short.
	Message string
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	return fmt.Sprintf("%s %s%s: %d %s", e.Method, e.Server, e.Path, e.Code, msg)
}

func statusCode(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func isNotFound(err error) bool     { return statusCode(err) == http.StatusNotFound }
func isConflict(err error) bool     { return statusCode(err) == http.StatusConflict }
func isUnauthorized(err error) bool { return statusCode(err) == http.StatusUnauthorized }
func isForbidden(err error) bool    { return statusCode(err) == http.StatusForbidden }
func isAlreadyExists(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusConflict && se.Reason == metav1.StatusReasonAlreadyExists
}

// retriable says whether another server may answer where this one failed:
// transport errors, overload and server errors.
func retriable(err error) bool {
	var se *StatusError
	if !errors.As(err, &se) {
		return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
	}
	return se.Code == http.StatusTooManyRequests || se.Code >= 500
}

// do sends one request, trying each server once, starting with the one
// that answered last. body is JSON-encoded unless it is []byte; out, when
// non-nil, receives the decoded answer.
//
// Each server gets an equal share of what is left of ctx's deadline (at
// least minAttempt): a master that lost power does not refuse
// connections, it just never answers, and must not use up the whole
// deadline before the next one is tried.
func (c *apiClient) do(ctx context.Context, method, path, contentType string, body, out any) error {
	var payload []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = b
	case protoBody:
		var err error
		if payload, err = b.encode(); err != nil {
			return err
		}
		contentType = contentProtobuf
	default:
		var err error
		if payload, err = json.Marshal(b); err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
	}
	servers := c.serverList()
	n := len(servers)
	cur := c.cur.Load()
	start := int(cur % int64(n))
	var errs []error
	for i := range n {
		idx := (start + i) % n
		server := servers[idx]
		actx, cancel := attemptContext(ctx, n-i)
		err := c.once(actx, server, method, path, contentType, payload, out)
		timedOut := actx.Err() != nil
		cancel()
		if err == nil {
			if i > 0 {
				c.failover(servers, cur, start, idx)
			}
			return nil
		}
		if ctx.Err() != nil || !retriable(err) && !timedOut {
			return err
		}
		if timedOut {
			err = fmt.Errorf("%s %s%s: no answer in time: %w", method, server, path, err)
		}
		errs = append(errs, err)
		// A failed connection may be half dead; the next request to this
		// server dials afresh.
		c.tr.CloseIdleConnections()
	}
	if n == 1 {
		return errs[0]
	}
	return fmt.Errorf("no apiserver answered: %w", errors.Join(errs...))
}

// minAttempt is the least time one server is given before the next is
// tried: a TLS handshake and a request on a busy apiserver.
const minAttempt = 2 * time.Second

// attemptContext bounds one attempt when left servers (this one included)
// share what remains of ctx's deadline.
func attemptContext(ctx context.Context, left int) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok || left <= 1 {
		return context.WithCancel(ctx)
	}
	share := max(time.Until(deadline)/time.Duration(left), minAttempt)
	return context.WithTimeout(ctx, share)
}

// failover makes servers[to] the one to try first, unless another request
// moved it meanwhile (cur is what this one started from).
func (c *apiClient) failover(servers []string, cur int64, from, to int) {
	if !c.cur.CompareAndSwap(cur, int64(to)) {
		return
	}
	c.log.Warn("failed over to another apiserver", "from", servers[from], "to", servers[to])
	if c.onFailover != nil {
		c.onFailover(servers[from], servers[to])
	}
}

func (c *apiClient) once(ctx context.Context, server, method, path, contentType string, payload []byte, out any) error {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, server+path, rd)
	if err != nil {
		return err
	}
	accept := contentJSON
	if _, ok := out.(protoObject); ok {
		accept = contentProtobuf + ", " + contentJSON
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.userAgent)
	if payload != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if !c.token.IsZero() {
		req.Header.Set("Authorization", "Bearer "+c.token.Reveal())
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error quotes the URL, never headers: the token stays out.
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s%s: read answer: %w", method, server, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := &StatusError{Server: server, Method: method, Path: path, Code: resp.StatusCode}
		if st, ok := decodeStatus(resp.Header.Get("Content-Type"), data); ok {
			se.Reason, se.Message = st.Reason, cut(st.Message, 300)
		}
		return se
	}
	if out == nil {
		return nil
	}
	var derr error
	if po, ok := out.(protoObject); ok && isProtobuf(resp.Header.Get("Content-Type")) {
		derr = decodeProtobuf(data, po)
	} else {
		derr = jsonUnmarshal(data, out)
	}
	if derr != nil {
		return fmt.Errorf("%s %s%s: decode answer: %w", method, server, path, derr)
	}
	return nil
}

// server is the apiserver in use.
func (c *apiClient) server() string {
	servers := c.serverList()
	return servers[c.cur.Load()%int64(len(servers))]
}

// close drops every connection.
func (c *apiClient) close() { c.tr.CloseIdleConnections() }

func jsonUnmarshal(data []byte, out any) error { return json.Unmarshal(data, out) }

func cut(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
