package sink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

const sinkSharedKey = "sink-test-shared-key"

// newForwardEnv is newEnv with fluentdsim's in_forward (TLS, shared key)
// and the configuration pointing the sink at it.
func newForwardEnv(t *testing.T, opts fluentdsim.Options) *env {
	t.Helper()
	opts.ForwardAddr, opts.SharedKey, opts.SelfHostname = "127.0.0.1:0", sinkSharedKey, "aggregator"
	e := newEnv(t, opts)
	e.cfg.Fluentd.URL = e.sim.ForwardURL() + "/test.log"
	e.cfg.Fluentd.SessionURL = e.sim.ForwardURL() + "/session"
	e.cfg.Fluentd.SharedKey = sinkSharedKey
	e.cfg.Fluentd.SelfHostname = "sink"
	return e
}

// startForward runs a sink with a forward client.
func (e *env) startForward() *running {
	e.t.Helper()
	logs := &logtest.Buffer{}
	f, err := fluentd.NewForward(e.cfg.Fluentd, zerolog.New(logs), e.cfg.Sink.Gzip)
	if err != nil {
		e.t.Fatalf("NewForward: %v", err)
	}
	e.t.Cleanup(f.Close)
	return e.startWith(e.cfg, f, logs)
}

// TestForwardRunDeliversAndExits: the sink command delivers audit and
// session events over in_forward, each under the tag in_http would give it,
// batched, exactly once, and exits when done.
func TestForwardRunDeliversAndExits(t *testing.T) {
	for _, gz := range []bool{false, true} {
		e := newForwardEnv(t, fluentdsim.Options{})
		e.cfg.Sink.Gzip = gz
		e.publishAudit(0, 500)
		var sess []bus.Event
		for i := range 20 {
			sess = append(sess, sessionEvent("0b6f1c9e-sid", i))
		}
		e.publish(sess...)
		e.cfg.ExitOnLastEvent = true
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := Run(ctx, e.cfg, zerolog.Nop())
		cancel()
		if err != nil {
			t.Fatalf("gzip %v: Run: %v", gz, err)
		}
		e.checkExactlyOnce(500)
		if got := len(e.sim.TagIDs("session.0b6f1c9e-sid.log")); got != 20 {
			t.Errorf("gzip %v: session tag holds %d events, want 20; stats: %s", gz, got, e.sim.Stats())
		}
		st := e.sim.Stats()
		if st.Requests >= 100 || st.HandshakeRefused != 0 || st.HandshakeErrors != 0 {
			t.Errorf("gzip %v: stats %s: want batches and no refusals", gz, st)
		}
		if !e.consumerIdle(e.cfg.NATS.AuditStream, e.cfg.Sink.AuditConsumer) {
			t.Errorf("gzip %v: audit consumer not idle after exit", gz)
		}
	}
}

// TestForwardWrongSharedKeyStopsRun: a shared key Fluentd refuses ends the
// sink at start-up with an error naming the refusal; nothing is
// acknowledged.
func TestForwardWrongSharedKeyStopsRun(t *testing.T) {
	e := newForwardEnv(t, fluentdsim.Options{})
	e.publishAudit(0, 10)
	e.cfg.Fluentd.SharedKey = "wrong"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := Run(ctx, e.cfg, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), `the server refused us: "shared_key mismatch"`) {
		t.Fatalf("Run: %v, want the shared key refusal", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("the error shows the key: %v", err)
	}
	if n := e.sim.Stats().StoredTotal; n != 0 {
		t.Errorf("stored %d", n)
	}
}

// TestForwardLostAcksLoseNothing: while Fluentd stores but never
// acknowledges, the sink acknowledges nothing on the bus; once acks come
// back every event arrives (the resent ones as duplicates).
func TestForwardLostAcksLoseNothing(t *testing.T) {
	e := newForwardEnv(t, fluentdsim.Options{Faults: fluentdsim.Faults{NoAck: true}})
	e.cfg.Fluentd.ResponseTimeout = 300 * time.Millisecond
	e.cfg.Sink.BatchSize = 50
	e.publishAudit(0, 200)
	r := e.startForward()
	eventually(t, 30*time.Second, "unacknowledged messages at Fluentd", func() bool { return e.sim.Stats().NoAcks >= 3 })
	if n := counter(t, r.metrics.Delivered); n != 0 {
		t.Fatalf("%v events counted delivered without an ack", n)
	}
	if e.consumerIdle(e.cfg.NATS.AuditStream, e.cfg.Sink.AuditConsumer) {
		t.Fatal("the consumer is idle: messages were acknowledged on the bus without Fluentd's ack")
	}
	if err := e.sim.SetFaults(fluentdsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "every event at Fluentd", func() bool { return len(e.sim.TagIDs("test.log")) == 200 })
	eventually(t, 30*time.Second, "the consumer to drain", func() bool {
		return e.consumerIdle(e.cfg.NATS.AuditStream, e.cfg.Sink.AuditConsumer)
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := counter(t, r.metrics.Delivered); n != 200 {
		t.Errorf("delivered %v, want 200", n)
	}
	if !strings.Contains(r.logs.String(), "no ack within 300ms") {
		t.Errorf("the log does not name the missing ack:\n%s", r.logs.String())
	}
}

// TestForwardUnsendableEventIsDeadLettered: an event that is not a JSON
// object cannot go to in_forward (it would drop it silently): it is
// isolated by splitting the batch and dead-lettered with the reason; the
// rest arrive.
func TestForwardUnsendableEventIsDeadLettered(t *testing.T) {
	e := newForwardEnv(t, fluentdsim.Options{})
	e.cfg.Sink.MaxDeliver = 1
	e.cfg.Sink.BatchSize = 50
	e.publishAudit(0, 20)
	bad := auditEvent(20)
	bad.JSON = []byte(`["not","an","object"]`)
	e.publish(bad)
	e.publishAudit(21, 29)
	r := e.startForward()
	e.waitStored(49, 30*time.Second)
	eventually(t, 10*time.Second, "the bad event to leave the consumer", func() bool {
		return e.consumerIdle(e.cfg.NATS.AuditStream, e.cfg.Sink.AuditConsumer)
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	dl := e.readDeadLetters()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	reason := dl[0].Headers().Get(bus.HeaderDeadLetterReason)
	if !strings.Contains(reason, "not a JSON object") || string(dl[0].Data()) != string(bad.JSON) {
		t.Errorf("dead letter reason %q, body %s", reason, dl[0].Data())
	}
	if ids := e.sim.TagIDs("test.log"); len(ids) != 49 {
		t.Errorf("fluentd holds %d events, want 49", len(ids))
	}
}
