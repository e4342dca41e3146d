package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics. A nil *Metrics records
// nothing, which is what benchmarks running thousands of agents use.
type Metrics struct {
	renewLatency  prometheus.Histogram
	renewFailures prometheus.Counter
	lastRenew     prometheus.Gauge
	statusUpdates *prometheus.CounterVec
	certExpiry    prometheus.Gauge
	rotations     *prometheus.CounterVec
	failovers     prometheus.Counter
	registered    prometheus.Gauge
}

// NewMetrics creates the agent's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		renewLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "anvil_agent_lease_renew_duration_seconds",
			Help:    "Time taken by one renewal of the node Lease, successful or not.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		renewFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anvil_agent_lease_renew_failures_total",
			Help: "Node Lease renewals that failed.",
		}),
		lastRenew: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anvil_agent_lease_last_renew_timestamp_seconds",
			Help: "Unix time of the last successful node Lease renewal.",
		}),
		statusUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anvil_agent_node_status_updates_total",
			Help: "Node status updates posted, by result.",
		}, []string{"result"}),
		certExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anvil_agent_client_certificate_expiration_timestamp_seconds",
			Help: "Unix time at which the agent's client certificate expires.",
		}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anvil_agent_client_certificate_rotations_total",
			Help: "Client certificate renewals through a CSR, by result.",
		}, []string{"result"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anvil_agent_apiserver_failovers_total",
			Help: "Times the agent moved to another apiserver.",
		}),
		registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anvil_agent_node_registered",
			Help: "1 once the Node is registered.",
		}),
	}
	reg.MustRegister(m.renewLatency, m.renewFailures, m.lastRenew, m.statusUpdates,
		m.certExpiry, m.rotations, m.failovers, m.registered)
	return m
}

func (m *Metrics) observeRenew(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.renewLatency.Observe(d.Seconds())
	if err != nil {
		m.renewFailures.Inc()
		return
	}
	m.lastRenew.SetToCurrentTime()
}

func (m *Metrics) observeStatus(err error) {
	if m == nil {
		return
	}
	m.statusUpdates.WithLabelValues(result(err)).Inc()
}

func (m *Metrics) observeRotation(err error) {
	if m == nil {
		return
	}
	m.rotations.WithLabelValues(result(err)).Inc()
}

func (m *Metrics) setCertExpiry(t time.Time) {
	if m == nil {
		return
	}
	m.certExpiry.Set(float64(t.Unix()))
}

func (m *Metrics) failover() {
	if m == nil {
		return
	}
	m.failovers.Inc()
}

func (m *Metrics) setRegistered() {
	if m == nil {
		return
	}
	m.registered.Set(1)
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "success"
}
