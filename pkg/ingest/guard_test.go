package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// lostEnv runs a first backfill to completion on a NATS server the test
// owns, so the test can then damage the streams between runs.
func lostEnv(t *testing.T, seed int64) (*env, *bus.Bus) {
	t.Helper()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: seed, Events: 1500, Sessions: 6, From: now.Add(-3 * 24 * time.Hour), To: now})
	b := e.shared()
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	return e, b
}

// wantLost runs ingest and checks it stops with ErrStreamLost saying want,
// and the recovery command.
func wantLost(t *testing.T, e *env, want string) {
	t.Helper()
	err := e.run(zerolog.Nop())
	if !errors.Is(err, ErrStreamLost) {
		t.Fatalf("Run: %v, want ErrStreamLost", err)
	}
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "stop every ingest and run: ingest recover") {
		t.Fatalf("Run: %q\nwant it to say %q and how to recover", err, want)
	}
}

// recoverAndCheck runs `ingest recover`, then ingest, and checks both
// streams hold every event exactly once.
func recoverAndCheck(t *testing.T, e *env, b *bus.Bus) {
	t.Helper()
	var out bytes.Buffer
	if err := Recover(context.Background(), e.cfg, zerolog.Nop(), &out); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if !strings.Contains(out.String(), "Start ingest as usual") {
		t.Errorf("Recover printed %q", out.String())
	}
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run after recover: %v", err)
	}
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
	exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
	kv, err := b.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(context.Background(), bus.RecoveryKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("recovery still marked after a complete run: %v", err)
	}
}

func TestMissingStreamIsDetectedBeforeItIsRecreated(t *testing.T) {
	t.Parallel()
	e, b := lostEnv(t, 21)
	ctx := context.Background()
	if err := b.JS.DeleteStream(ctx, b.Cfg.AuditStream); err != nil {
		t.Fatal(err)
	}
	wantLost(t, e, `stream "TELEPORT_AUDIT" is missing, but ingest's saved positions say it held events`)
	if _, err := b.JS.Stream(ctx, b.Cfg.AuditStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("ingest recreated the lost stream: %v", err)
	}
	recoverAndCheck(t, e, b)
}

func TestRecreatedStreamIsDetected(t *testing.T) {
	t.Parallel()
	e, b := lostEnv(t, 22)
	ctx := context.Background()
	// The sessions stream is lost and something (a sink starting first)
	// creates it again, empty.
	if err := b.JS.DeleteStream(ctx, b.Cfg.SessionStream); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateMissingStreams(ctx); err != nil {
		t.Fatal(err)
	}
	wantLost(t, e, `stream "TELEPORT_SESSIONS" was recreated since ingest saved its positions`)
	recoverAndCheck(t, e, b)
}

// TestRecoveryPublishesOnlyWhatTheStreamLacks replaces the audit stream
// with one holding the first half of its events again, and a duplicate
// window (100 ms) far shorter than the time from the copy to the
// re-export: only the recovery's scan of the ids in the stream keeps the
// bus exactly-once.
func TestRecoveryPublishesOnlyWhatTheStreamLacks(t *testing.T) {
	t.Parallel()
	e, b := lostEnv(t, 23)
	ctx := context.Background()
	s, err := b.JS.Stream(ctx, b.Cfg.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	half := s.CachedInfo().State.LastSeq / 2
	if half == 0 {
		t.Fatal("the first run published nothing")
	}
	var kept []*nats.Msg
	for seq := uint64(1); seq <= half; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		kept = append(kept, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	}
	if err := b.JS.DeleteStream(ctx, b.Cfg.AuditStream); err != nil {
		t.Fatal(err)
	}
	e.cfg.NATS.DuplicateWindow = 100 * time.Millisecond
	cfg := bus.StreamConfigs(e.cfg.NATS)[0]
	if _, err := b.JS.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, m := range kept {
		if _, err := b.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	wantLost(t, e, `stream "TELEPORT_AUDIT" was recreated since ingest saved its positions`)
	recoverAndCheck(t, e, b)
}

func TestStreamShorterThanTheMarkIsDetected(t *testing.T) {
	t.Parallel()
	e, b := lostEnv(t, 24)
	ctx := context.Background()
	kv, err := b.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(ctx, bus.StreamMarkKey(b.Cfg.AuditStream))
	if err != nil {
		t.Fatalf("no mark for the audit stream after a run: %v", err)
	}
	var m streamMark
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		t.Fatal(err)
	}
	s, err := b.JS.Stream(ctx, b.Cfg.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if last := s.CachedInfo().State.LastSeq; m.Seq != last {
		t.Fatalf("mark at sequence %d, the stream's last is %d: the mark must record the last acknowledged one", m.Seq, last)
	}
	if !m.Created.Equal(s.CachedInfo().Created) {
		t.Fatalf("mark created %s, stream created %s", m.Created, s.CachedInfo().Created)
	}
	// A store that lost its newest blocks keeps the stream but holds less:
	// the mark claims more than the stream holds.
	m.Seq += 40
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, bus.StreamMarkKey(b.Cfg.AuditStream), raw); err != nil {
		t.Fatal(err)
	}
	wantLost(t, e, `stream "TELEPORT_AUDIT" holds fewer messages than ingest's saved positions account for`)
	recoverAndCheck(t, e, b)
}

func TestStreamDeletedWhileIngestRunsStopsIt(t *testing.T) {
	t.Parallel()
	e, b := lostEnv(t, 25)
	e.cfg.ExitOnLastEvent = false
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, zerolog.Nop()) }()
	// Let it take the lease and start reading before the stream goes.
	if !until(done, 30*time.Second, func() bool {
		kv, err := b.State(ctx)
		if err != nil {
			return false
		}
		_, err = kv.Get(ctx, keyLease)
		return err == nil
	}) {
		t.Fatal("ingest did not take the lease")
	}
	if err := b.JS.DeleteStream(ctx, b.Cfg.AuditStream); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrStreamLost) || !strings.Contains(err.Error(), `stream "TELEPORT_AUDIT" is missing`) {
			t.Fatalf("Run: %v, want the audit stream reported missing", err)
		}
	case <-ctx.Done():
		t.Fatal("ingest kept running over a deleted stream")
	}
	e.cfg.ExitOnLastEvent = true
	recoverAndCheck(t, e, b)
}

func TestRecoverRefusesWhileAnIngestHoldsTheLease(t *testing.T) {
	ctx := context.Background()
	st := position.Memory()
	now := time.Now()
	if err := st.Put(ctx, keyLease, leaseValue{Holder: "host/42/x", Expires: now.Add(10 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	err := refuseWhileLeased(st, now)
	if err == nil || !strings.Contains(err.Error(), "ingest host/42/x holds the lease") || !strings.Contains(err.Error(), "stop every ingest before `ingest recover`") {
		t.Fatalf("recover under a running ingest: %v", err)
	}
	if err := refuseWhileLeased(st, now.Add(time.Minute)); err != nil {
		t.Fatalf("recover after the lease expired: %v", err)
	}
}
