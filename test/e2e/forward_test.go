package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// forwardKills is how often the forward sink-kill test kills the sink.
const forwardKills = 5

// TestForwardSinkKilledDuringDelivery is TestSinkKilledDuringDelivery over
// in_forward (TLS with client certificates, shared key, acks): the sink is
// killed with SIGKILL at random moments and restarted; Fluentd has every
// event, with no more duplicates than the messages in flight at the kills.
func TestForwardSinkKilledDuringDelivery(t *testing.T) {
	r := newE2ERun(t, runSpec{
		events:   sized(30_000, 1_000_000),
		sessions: sized(100, 3000),
		days:     2,
		timeout:  sized(5*time.Minute, 60*time.Minute),
		forward:  true,
	})
	r.killSinkDuringDelivery(forwardKills)

	bound := forwardKills * sinkInFlight * sinkBatch
	dups := r.checkFluentd(bound)
	st, err := r.p.FluentdStats(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("in_forward: %d duplicates after %d kills (bound %d); %d messages on %d connections, %d handshake refusals",
		dups, forwardKills, bound, st.Requests, st.Connections, st.HandshakeRefused)
	if st.HandshakeRefused != 0 {
		t.Errorf("fluentd-sim refused %d handshakes", st.HandshakeRefused)
	}
	if st.Requests == 0 || st.StoredTotal/st.Requests < 10 {
		t.Errorf("%d records in %d messages: want batches (PackedForward), not one event per message", st.StoredTotal, st.Requests)
	}
	r.checkStreams()
}

// TestForwardLostAcksAndDroppedConnections: Fluentd stops acknowledging,
// then drops a third of the connections mid-message; when it recovers,
// everything has arrived (lost acks cost duplicates, never events). Before
// that, a sink with the wrong shared key stops at once with an error naming
// the refusal, and delivers nothing.
func TestForwardLostAcksAndDroppedConnections(t *testing.T) {
	phase := sized(8*time.Second, 60*time.Second)
	r := newE2ERun(t, runSpec{
		events:   sized(20_000, 500_000),
		sessions: sized(50, 1000),
		days:     1,
		timeout:  sized(5*time.Minute, 40*time.Minute),
		forward:  true,
	})
	ing := r.ingest("ingest")

	wrongKey := filepath.Join(r.p.Dir, "wrong.key")
	if err := os.WriteFile(wrongKey, []byte("not-the-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := r.sink("sink-wrong-key", "--fluentd-shared-key-file", wrongKey)
	code, err := bad.Wait(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 || !strings.Contains(bad.Log(), `"shared_key mismatch"`) {
		t.Errorf("sink with the wrong shared key: exit %d, log:\n%s", code, bad.Tail(10))
	}
	if log := bad.Log(); strings.Contains(log, "not-the-key") {
		t.Errorf("the shared key is in the sink's log:\n%s", bad.Tail(10))
	}
	if n := r.progress().Audit; n != 0 {
		t.Fatalf("%d audit events delivered with the wrong shared key", n)
	}

	snk := r.sink("fluentd-sink", "--fluentd-response-timeout", "2s", "--sink-ack-wait", "5s")
	r.waitFluentd(int64(len(r.want.AuditIDs)/10), ing, snk)
	for _, fault := range []struct{ what, json string }{
		{"acks lost", `{"no_ack":true}`},
		{"a third of the connections dropped", `{"drop_percent":33}`},
	} {
		if err := harness.Post(r.ctx, "PUT", r.p.FluentdControl+"/faults", fault.json); err != nil {
			t.Fatal(err)
		}
		before := r.progress()
		r.hold(phase, fault.what, ing, snk)
		t.Logf("%s for %s: %d audit events stored meanwhile", fault.what, phase, r.progress().Audit-before.Audit)
	}
	if err := harness.Post(r.ctx, "PUT", r.p.FluentdControl+"/faults", `{}`); err != nil {
		t.Fatal(err)
	}
	r.waitDelivered(ing, snk)
	st, err := r.p.FluentdStats(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.NoAcks == 0 || st.DroppedConnections == 0 {
		t.Errorf("stats %s: the faults did not happen", st)
	}
	dups := r.checkFluentd(len(r.want.AuditIDs) + r.want.SessionTotal)
	t.Logf("after the faults: %d duplicates, stats %s", dups, st)
	r.checkStreams()
}
