package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"anvil.dev/anvil/internal/backoff"
	"anvil.dev/anvil/internal/sdnotify"
)

// ServeOptions are the inputs of `anvil agent`.
type ServeOptions struct {
	ConfigFile string
	Log        *slog.Logger
}

// Serve is `anvil agent`: it loads agent.yaml and the kubeconfig, serves
// /healthz and /metrics on loopback, tells systemd (or anvil's
// supervisor) it is ready and pings the watchdog while its loops are
// alive, and runs the Agent until ctx ends (SIGTERM). Only a bad
// configuration or kubeconfig, or a taken metrics port, makes it return an
// error; apiserver trouble is retried for ever.
func Serve(ctx context.Context, o ServeOptions) error {
	TuneMemory()
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	cfg, err := LoadConfig(o.ConfigFile)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := New(cfg, Options{Log: log, Metrics: NewMetrics(reg)})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.MetricsAddress.String())
	if err != nil {
		return fmt.Errorf("serve metrics on %s: %w", cfg.MetricsAddress, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		h := struct {
			Healthy    bool      `json:"healthy"`
			Registered bool      `json:"registered"`
			LastRenew  time.Time `json:"lastRenew,omitzero"`
			Server     string    `json:"server"`
			// PodNetwork is there when the agent runs it (runtime
			// containerd, network host-gw).
			PodNetwork *podNetworkHealth `json:"podNetwork,omitempty"`
		}{a.Healthy(), a.Registered(), a.LastRenew(), a.Server(), podNetworkHealthOf(a)}
		w.Header().Set("Content-Type", "application/json")
		if !h.Healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(h)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()

	log.Info("agent starting", "config", o.ConfigFile, "servers", cfg.Servers, "metrics", cfg.MetricsAddress.String())
	if cfg.RunsPods() {
		sdnotify.Ready("node " + cfg.NodeName + ": pod network and image archives")
	} else {
		sdnotify.Ready("registering node " + cfg.NodeName)
	}
	sdnotify.Watchdog(ctx, a.Healthy)
	go releaseAfterStart(ctx, a, log)

	err = a.Run(ctx)
	sdnotify.Stopping()
	return err
}

// releaseAfterStart drops the pages init touched once the agent has
// registered and run its loops for a while, so the steady state maps back
// only what it uses.
func releaseAfterStart(ctx context.Context, a *Agent, log *slog.Logger) {
	for !a.Registered() && !a.cfg.RunsPods() {
		if !backoff.Sleep(ctx, time.Second) {
			return
		}
	}
	sdnotify.Status("node " + a.cfg.NodeName + " registered")
	// Let every loop (lease, status, the verification read) run once.
	if !backoff.Sleep(ctx, 2*a.cfg.StatusUpdateInterval) {
		return
	}
	before, _ := ReadMemoryUsage(0)
	n, err := ReleaseStartupPages()
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Debug("could not release startup pages", "err", err)
		return
	}
	after, _ := ReadMemoryUsage(0)
	log.Debug("released startup pages", "advised", n, "rssBefore", before.RSS, "rssAfter", after.RSS)
}

// podNetworkHealth is the pod network's state in /healthz.
type podNetworkHealth struct {
	PodCIDRs []string `json:"podCIDRs"`
	Routes   int      `json:"routes"`
	// ServiceRoutes are the Service CIDRs routed through the node's
	// interface, for want of a default route.
	ServiceRoutes []string  `json:"serviceRoutes,omitempty"`
	Waiting       []string  `json:"waiting,omitempty"`
	Error         string    `json:"error,omitempty"`
	Synced        time.Time `json:"synced,omitzero"`
}

func podNetworkHealthOf(a *Agent) *podNetworkHealth {
	st, ok := a.PodNetworkStatus()
	if !ok {
		return nil
	}
	h := &podNetworkHealth{Routes: len(st.Routes), Synced: st.Synced}
	for _, p := range st.PodCIDRs {
		h.PodCIDRs = append(h.PodCIDRs, p.String())
	}
	for _, p := range st.ServiceRoutes {
		h.ServiceRoutes = append(h.ServiceRoutes, p.String())
	}
	for _, w := range st.Waiting {
		h.Waiting = append(h.Waiting, w.Reason)
	}
	if st.Err != nil {
		h.Error = st.Err.Error()
	}
	return h
}
