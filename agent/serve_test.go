package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// notifySocket stands in for systemd's notification socket and collects
// what the agent tells it.
type notifySocket struct {
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", p)
	n := &notifySocket{conn: c, msgs: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// await waits for a message containing want.
func (n *notifySocket) await(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var seen []string
	for {
		select {
		case m := <-n.msgs:
			if strings.Contains(m, want) {
				return
			}
			seen = append(seen, m)
		case <-deadline:
			t.Fatalf("no %q from the agent within 10s (got %q)", want, seen)
		}
	}
}

func freeLoopbackPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestServe runs `anvil agent` as systemd would (minus the process):
// READY once it runs, watchdog pings while its loops are alive, /healthz
// and Prometheus /metrics on loopback with the renewal latency, failures
// and last success, and a clean stop (STOPPING, nil error, port released)
// when its context ends, which is what SIGTERM does in main.
func TestServe(t *testing.T) {
	ca, fc, srvs := newFakeSetup(t, 1)
	creds, err := MintCredentials(MintOptions{NodeName: "w1", Server: srvs[0].URL(), CACert: ca.cert, CAKey: ca.key})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kc := filepath.Join(dir, "state", "kubeconfig")
	if err := writeKubeconfig(kc, "w1", creds); err != nil {
		t.Fatal(err)
	}
	no := false
	cfg := &Config{
		NodeName: "w1", Servers: []string{srvs[0].URL()}, Kubeconfig: kc, RotateCertificates: &no,
		LeaseDuration: time.Second, RenewInterval: 100 * time.Millisecond,
		StatusUpdateInterval: 100 * time.Millisecond, StatusReportInterval: time.Second,
		EphemeralStoragePath: dir, MetricsAddress: freeLoopbackPort(t),
	}
	cfg.Default()
	cfgFile := filepath.Join(dir, "agent.yaml")
	if _, err := WriteConfig(cfgFile, cfg); err != nil {
		t.Fatal(err)
	}
	notify := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000")
	// The test process keeps its own garbage-collector settings.
	t.Setenv("GOGC", "100")
	t.Setenv("GOMEMLIMIT", "off")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ServeOptions{ConfigFile: cfgFile, Log: slog.New(slog.DiscardHandler)}) }()

	notify.await(t, "READY=1")
	notify.await(t, "WATCHDOG=1")
	base := "http://" + cfg.MetricsAddress.String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, "healthy, registered and renewing", func() (bool, string) {
		code, body := get("/healthz")
		var h struct {
			Healthy, Registered bool
			LastRenew           time.Time
			Server              string
		}
		json.Unmarshal([]byte(body), &h)
		return code == http.StatusOK && h.Healthy && h.Registered && !h.LastRenew.IsZero() && h.Server == srvs[0].URL(), body
	})
	notify.await(t, "STATUS=node w1 registered")

	// An outage shows as failures; the last success stays where it was.
	fc.down.Store(true)
	time.Sleep(500 * time.Millisecond)
	fc.down.Store(false)
	eventually(t, "renewal metrics", func() (bool, string) {
		_, body := get("/metrics")
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			return false, err.Error()
		}
		value := func(name string) float64 {
			f, ok := fams[name]
			if !ok || len(f.Metric) == 0 {
				return -1
			}
			m := f.Metric[0]
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
			return -1
		}
		renewals := value("anvil_agent_lease_renew_duration_seconds")
		failures := value("anvil_agent_lease_renew_failures_total")
		last := value("anvil_agent_lease_last_renew_timestamp_seconds")
		registered := value("anvil_agent_node_registered")
		desc := fmt.Sprintf("renewals %v failures %v last %v registered %v", renewals, failures, last, registered)
		return renewals > failures && failures > 0 && time.Since(time.Unix(int64(last), 0)) < 5*time.Second && registered == 1, desc
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after its context ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of its context ending")
	}
	notify.await(t, "STOPPING=1")
	if conn, err := net.DialTimeout("tcp", cfg.MetricsAddress.String(), time.Second); err == nil {
		conn.Close()
		t.Error("the metrics port is still open after Serve returned")
	}
}
