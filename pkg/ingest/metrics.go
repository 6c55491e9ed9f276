package ingest

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/lock"
)

// metrics are ingest's Prometheus series, all named
// teleport_event_bus_ingest_*.
type metrics struct {
	published       *prometheus.CounterVec
	sessionEvents   prometheus.Counter
	trimmed         prometheus.Counter
	missing         prometheus.Counter
	sessionJobs     *prometheus.CounterVec
	sessionsRunning prometheus.Gauge
	cursorLag       prometheus.Gauge
	leader          prometheus.Gauge
	readErrors      prometheus.Counter
	// publishWait sums what publishes waited before being sent, by what
	// they waited for (bus.PublishWait).
	publishWait *prometheus.CounterVec
	// pause is set while the bus has no room (paused{reason}).
	pause *pauser
	// removedUnacked counts messages a limit removed before a durable
	// consumer acknowledged them.
	removedUnacked *prometheus.CounterVec
	// lock holds the lock watcher's series (teleport_event_bus_lock_*).
	lock *lock.Metrics
	// memory holds the memory budget's series (memory.go); nil in tests
	// and dry runs.
	memory *memoryMetrics
}

// newMetrics creates the series and registers them in reg (nil: not
// registered, for tests and dry runs).
func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "teleport_event_bus", "ingest"
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "events_published_total", Help: "Audit events acknowledged by JetStream, by event type."}, []string{"type"}),
		sessionEvents: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "session_events_published_total", Help: "Session recording events acknowledged by JetStream."}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "events_trimmed_total", Help: "Events shortened to fit the stream's maximum message size."}),
		missing: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "missing_recordings_total", Help: "Session recordings given up on after missing-recording-ttl."}),
		sessionJobs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "session_jobs_total", Help: "Session recording jobs finished, by result (done, gave_up)."}, []string{"result"}),
		sessionsRunning: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "session_jobs_pending", Help: "Session recording jobs not finished yet (running or waiting to retry)."}),
		cursorLag: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "cursor_lag_seconds", Help: "Age of the newest event whose position is saved."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "leader", Help: "1 while this process holds the ingest lease."}),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "read_retries_total", Help: "Passes over the audit log retried after a transient error."}),
		removedUnacked: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "removed_unacknowledged_total", Help: "Messages a stream limit (max-age) removed before a durable consumer acknowledged them, by stream and consumer: events that consumer never got."},
			[]string{"stream", "consumer"}),
	}
	m.publishWait = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
		Name: "publish_wait_seconds_total", Help: "Time events waited to be published, summed over the readers publishing at once (its rate is how many wait on average), by reason (write_pace: the memory budget's pace of writes to the embedded server; in_flight: max-in-flight events awaited their PubAck)."},
		[]string{"reason"})
	paused := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
		Name: "paused", Help: "1 while publishing is paused because the bus has no room, by reason (max_bytes: a stream is full; store_full: the JetStream store is)."},
		[]string{"reason"})
	m.pause = newPauser(paused)
	m.lock = lock.NewMetrics(reg)
	if reg != nil {
		reg.MustRegister(m.published, m.sessionEvents, m.trimmed, m.missing, m.sessionJobs,
			m.sessionsRunning, m.cursorLag, m.leader, m.readErrors, m.publishWait, paused, m.removedUnacked)
	}
	return m
}

// observePublishWait counts a publish's wait (bus.WithWaitObserver).
func (m *metrics) observePublishWait(kind bus.PublishWait, d time.Duration) {
	m.publishWait.WithLabelValues(string(kind)).Add(d.Seconds())
}
