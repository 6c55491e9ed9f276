package ingest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// TestFirstRunWithoutStartTimeThenBackfill: a first run without start-time
// reads from now (nothing of what Teleport holds), says so in one line
// with the time it fixed and how to backfill, and `ingest backfill` then
// moves the start-time earlier: the next run publishes exactly the events
// it skipped, once, and status shows the new start-time. A plain run with
// the earlier start-time, and a backfill to a later one, are refused.
func TestFirstRunWithoutStartTimeThenBackfill(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 51, Events: 60, Sessions: 2, From: now.Add(-2 * time.Hour), To: now})
	earlier := e.cfg.StartTime
	e.cfg.StartTime = time.Time{}
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	fixed := startTimeOf(t, e)
	line := "no start-time given: reading from now; start-time fixed at " + fixed.Format(time.RFC3339)
	if n := strings.Count(logs.String(), line); n != 1 {
		t.Errorf("%d log lines %q; want 1:\n%s", n, line, logs)
	}
	if !strings.Contains(logs.String(), "run `ingest backfill --start-time <earlier RFC 3339 time>`") {
		t.Errorf("the log does not say how to backfill:\n%s", logs)
	}
	if n := messages(t, e, false); n != 0 {
		t.Fatalf("the first run published %d events; the double's are all from before it started", n)
	}

	e.cfg.StartTime = earlier
	err := e.run(zerolog.Nop())
	if !errors.Is(err, position.ErrStartTimeChanged) || !strings.Contains(err.Error(), "`ingest backfill --start-time "+earlier.Format(time.RFC3339)+"`") {
		t.Fatalf("Run with an earlier start-time: %v; want position.ErrStartTimeChanged naming ingest backfill", err)
	}
	var out bytes.Buffer
	cfg := *e.cfg
	cfg.StartTime = fixed.Add(time.Hour)
	if err := Backfill(context.Background(), &cfg, zerolog.Nop(), &out); !errors.Is(err, ErrStartTimeLater) {
		t.Fatalf("Backfill to a later start-time: %v; want ErrStartTimeLater", err)
	}
	if err := Backfill(context.Background(), e.cfg, zerolog.Nop(), &out); err != nil {
		t.Fatalf("Backfill: %v", err)
	}
	want := "Moved the start-time from " + fixed.Format(time.RFC3339) + " to " + earlier.Format(time.RFC3339)
	if !strings.Contains(out.String(), want) {
		t.Errorf("Backfill wrote %q; want %q", out.String(), want)
	}

	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run after the backfill: %v", err)
	}
	b := e.openUntilClosed()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
	exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
	b.Close()
	out.Reset()
	if err := Status(context.Background(), e.cfg, &out); err != nil {
		t.Fatalf("Status: %v", err)
	}
	if !strings.Contains(out.String(), "Start time: "+earlier.Format(time.RFC3339)) {
		t.Errorf("status does not show the new start-time %s:\n%s", earlier.Format(time.RFC3339), out.String())
	}
}

// TestBackfillPublishesOnlyWhatTheStreamLacks: events the first run
// published (those after the start-time it fixed) are read again by the
// run after a backfill, which reads the old start-time's date from its
// start, and are not published twice; a consumer that had every message
// gets exactly the backfilled events.
func TestBackfillPublishesOnlyWhatTheStreamLacks(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	// Events after now too, so the first run publishes some; all of them
	// on today's date, which the run reads.
	to := now.Add(10 * time.Minute)
	if midnight := utcDate(now).Add(24 * time.Hour); !to.Before(midnight) {
		to = midnight.Add(-time.Second)
	}
	e := newEnv(t, teleportsim.Options{Seed: 52, Events: 240, From: now.Add(-2 * time.Hour), To: to})
	// Whatever the duplicate window, JetStream's dedup must not be what
	// keeps the events the first run published from being stored twice.
	e.cfg.NATS.DuplicateWindow = 100 * time.Millisecond
	earlier := e.cfg.StartTime
	e.cfg.StartTime = time.Time{}
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	first := consume(t, e, "backfill-test")
	if len(first) == 0 || len(first) >= len(e.sim.AllEventIDs()) {
		t.Fatalf("the first run published %d of %d events; the test needs some before and some after its start", len(first), len(e.sim.AllEventIDs()))
	}

	e.cfg.StartTime = earlier
	var out bytes.Buffer
	if err := Backfill(context.Background(), e.cfg, zerolog.Nop(), &out); err != nil {
		t.Fatalf("Backfill: %v", err)
	}
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run after the backfill: %v", err)
	}
	second := consume(t, e, "backfill-test")
	if got, want := len(second), len(e.sim.AllEventIDs())-len(first); got != want {
		t.Errorf("the consumer got %d messages after the backfill; want the %d events the first run skipped", got, want)
	}
	for id := range second {
		if first[id] {
			t.Errorf("event %s delivered again after the backfill", id)
		}
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}

// startTimeOf is the start-time stored in e's state.
func startTimeOf(t *testing.T, e *env) time.Time {
	t.Helper()
	b := e.openUntilClosed()
	defer b.Close()
	kv, err := b.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := position.Open(context.Background(), kv, b.Cfg.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	var s position.Start
	if ok, err := st.Get(position.KeyStartTime, &s); err != nil || !ok {
		t.Fatalf("start-time in the state: %v, %v", ok, err)
	}
	return s.StartTime
}

// messages is how many messages the audit (or session) stream of e holds.
func messages(t *testing.T, e *env, session bool) int {
	t.Helper()
	b := e.openUntilClosed()
	defer b.Close()
	name := b.Cfg.AuditStream
	if session {
		name = b.Cfg.SessionStream
	}
	info, err := b.StreamInfo(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return int(info.State.Msgs)
}

// consume reads every message a durable consumer of the audit stream has
// pending, as a sink would, acknowledging each, and returns their
// Nats-Msg-Ids.
func consume(t *testing.T, e *env, durable string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := e.openUntilClosed()
	defer b.Close()
	c, err := b.JS.CreateOrUpdateConsumer(ctx, b.Cfg.AuditStream, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for left := int(info.NumPending); left > 0; {
		batch, err := c.Fetch(left, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			id := m.Headers().Get(bus.HeaderMsgID)
			if got[id] {
				t.Errorf("consumer %s got %s twice", durable, id)
			}
			got[id] = true
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			left--
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return got
}
