package lock

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the lock watcher's Prometheus collectors, all named
// teleport_event_bus_lock_*.
type Metrics struct {
	// FailedLogins counts failed logins recorded, each event once however
	// often it is delivered.
	FailedLogins prometheus.Counter
	// Locks counts locks placed in Teleport.
	Locks prometheus.Counter
	// Errors counts failures that were retried, by operation: "upsert_lock"
	// (Teleport refused or failed the lock) or "state" (the KV bucket).
	Errors *prometheus.CounterVec
	// Skipped counts login events that were not counted, by reason:
	// "malformed", "no_user", "no_success", "stale".
	Skipped *prometheus.CounterVec
}

// NewMetrics makes the collectors and registers them in reg (none when reg
// is nil). Register them once per registry: a second call with the same
// registry panics, as prometheus does for duplicate collectors.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "teleport_event_bus", "lock"
	m := &Metrics{
		FailedLogins: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "failed_logins_total", Help: "Failed Teleport logins counted towards a lock (each event once)."}),
		Locks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "locks_total", Help: "Teleport locks placed after repeated failed logins."}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "errors_total", Help: "Failures handed back for a retry with backoff, by operation (upsert_lock, state)."},
			[]string{"op"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "skipped_total", Help: "Login events not counted, by reason (malformed, no_user, no_success, stale)."},
			[]string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.FailedLogins, m.Locks, m.Errors, m.Skipped)
	}
	return m
}
