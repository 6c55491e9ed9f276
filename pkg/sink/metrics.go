package sink

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sink's Prometheus collectors, all named
// teleport_event_bus_sink_*.
type Metrics struct {
	Delivered       *prometheus.CounterVec
	Retried         prometheus.Counter
	DeadLettered    prometheus.Counter
	BatchSize       prometheus.Histogram
	RequestDuration *prometheus.HistogramVec
	ConsumerPending *prometheus.GaugeVec
	BreakerOpen     prometheus.Gauge
}

// NewMetrics makes the collectors and registers them in reg (none when reg
// is nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "teleport_event_bus_sink_"
	m := &Metrics{
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ns + "delivered_total",
			Help: "Events Fluentd accepted (2xx) and that were acknowledged, per stream.",
		}, []string{"stream"}),
		Retried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: ns + "retried_total",
			Help: "Event deliveries that failed and will be tried again: sent while Fluentd refused events (5xx, timeout, connection or TLS error, no ack; held and sent again when it answers), or refused before max-deliver (handed back to JetStream with a delay).",
		}),
		DeadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: ns + "dead_lettered_total",
			Help: "Events Fluentd kept refusing, moved to deadletter.<subject> and terminated.",
		}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    ns + "batch_size",
			Help:    "Events per request to Fluentd.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000},
		}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    ns + "request_duration_seconds",
			Help:    "Duration of requests to Fluentd, by HTTP status (\"error\" when no answer came).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"code"}),
		ConsumerPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: ns + "consumer_pending",
			Help: "Messages of the stream the sink's consumer has not yet had acknowledged (not delivered plus awaiting ack).",
		}, []string{"stream"}),
		BreakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: ns + "breaker_open",
			Help: "1 while Fluentd refuses events and the sink has paused delivery and probes it (the circuit breaker is open), else 0.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Delivered, m.Retried, m.DeadLettered, m.BatchSize, m.RequestDuration, m.ConsumerPending, m.BreakerOpen)
	}
	return m
}

// observeRequest records one request of n events answered with status (0
// when no answer came).
func (m *Metrics) observeRequest(n int, status int, d time.Duration) {
	code := "error"
	if status > 0 {
		code = strconv.Itoa(status)
	}
	m.BatchSize.Observe(float64(n))
	m.RequestDuration.WithLabelValues(code).Observe(d.Seconds())
}
