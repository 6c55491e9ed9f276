package sink

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

// TestStopLogsPositions: on a stop (SIGTERM) the sink's last line says it
// stopped cleanly and where each durable consumer stands, so an operator
// sees what the next sink resumes after.
func TestStopLogsPositions(t *testing.T) {
	e := newEnv(t, fluentdsim.Options{})
	e.publishAudit(1, 25)
	r := e.start(e.cfg)
	e.waitStored(25, 30*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after a stop: %v, want nil", err)
	}
	lines := strings.Split(strings.TrimSpace(r.logs.String()), "\n")
	var last struct {
		Level     string
		Message   string
		Unsettled *int64
		Consumers []struct {
			Stream              string
			Consumer            string
			AcknowledgedThrough *uint64 `json:"acknowledged_through"`
			Pending             *uint64
			Unacknowledged      *int
			Error               string
		}
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last log line %q: %v", lines[len(lines)-1], err)
	}
	if last.Message != "sink stopped cleanly; positions saved in the durable consumers" || last.Level != "info" {
		t.Fatalf("last log line is %q, want the clean-stop line:\n%s", lines[len(lines)-1], r.logs.String())
	}
	if last.Unsettled == nil || *last.Unsettled != 0 {
		t.Errorf("unsettled %v, want 0 (everything was delivered)", last.Unsettled)
	}
	found := false
	for _, c := range last.Consumers {
		if c.Error != "" || c.AcknowledgedThrough == nil || c.Pending == nil || c.Unacknowledged == nil {
			t.Errorf("consumer %s/%s: %+v", c.Stream, c.Consumer, c)
			continue
		}
		if c.Stream == e.cfg.NATS.AuditStream {
			found = true
			if *c.AcknowledgedThrough != 25 || *c.Pending != 0 || *c.Unacknowledged != 0 {
				t.Errorf("audit consumer acknowledged through %d, pending %d, unacknowledged %d; want 25, 0, 0",
					*c.AcknowledgedThrough, *c.Pending, *c.Unacknowledged)
			}
		}
	}
	if !found {
		t.Errorf("the stop line names no consumer on %s: %s", e.cfg.NATS.AuditStream, lines[len(lines)-1])
	}
}

// TestStopWithinShutdownTimeoutWithNATSAndFluentdDown: a SIGTERM while
// Fluentd refuses events and the NATS server is gone ends Run within
// sink.shutdown-timeout, the final flush and position report included.
func TestStopWithinShutdownTimeoutWithNATSAndFluentdDown(t *testing.T) {
	e := newEnv(t, fluentdsim.Options{})
	e.cfg.Sink.ShutdownTimeout = 3 * time.Second
	e.publishAudit(0, 50)
	r := e.start(e.cfg)
	e.waitStored(50, 30*time.Second)
	e.sim.Down(0)
	e.publishAudit(50, 50)
	eventually(t, 30*time.Second, "readyz to report the failing Fluentd", func() bool { return r.sink.Ready() != nil })
	e.emb.Shutdown()
	eventually(t, 30*time.Second, "the sink to lose NATS", func() bool {
		err := r.sink.Ready()
		return err != nil && strings.Contains(err.Error(), "NATS")
	})
	start := time.Now()
	err := r.stop(t)
	took := time.Since(start)
	if err != nil {
		t.Errorf("Run after a stop: %v, want nil", err)
	}
	// Two seconds of slack for the goroutines to notice on a loaded machine.
	if limit := e.cfg.Sink.ShutdownTimeout + 2*time.Second; took > limit {
		t.Errorf("the sink took %s to stop, want at most %s (sink.shutdown-timeout %s)", took.Round(time.Millisecond), limit, e.cfg.Sink.ShutdownTimeout)
	}
	t.Logf("stopped in %s", took.Round(time.Millisecond))
}
