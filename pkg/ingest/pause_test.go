package ingest

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// endpoint serves ingest's /metrics and /readyz on a free port.
func (e *env) endpoint() func(path string) (int, string) {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.cfg.Ingest.MetricsAddr = ln.Addr().String()
	if err := ln.Close(); err != nil {
		e.t.Fatal(err)
	}
	return func(path string) (int, string) {
		resp, err := http.Get("http://" + e.cfg.Ingest.MetricsAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err.Error()
		}
		return resp.StatusCode, string(body)
	}
}

// waitPaused waits until /readyz and the paused metric say ingest is
// paused for reason, and the log has said so once.
func waitPaused(t *testing.T, done <-chan error, get func(string) (int, string), logs *logtest.Buffer, reason, line string) {
	t.Helper()
	metric := `teleport_event_bus_ingest_paused{reason="` + reason + `"} 1`
	if !until(done, 60*time.Second, func() bool {
		code, body := get("/readyz")
		_, m := get("/metrics")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "paused since") && strings.Contains(m, metric)
	}) {
		code, body := get("/readyz")
		t.Fatalf("ingest did not report the pause: /readyz %d %q\n%s", code, body, logs.String())
	}
	if n := strings.Count(logs.String(), line); n != 1 {
		t.Errorf("%d log lines %q, want 1:\n%s", n, line, logs.String())
	}
}

// TestFullStreamPausesIngestUntilRoomIsMade fills the audit stream
// (max-bytes, discard new): ingest pauses with one log line, the paused
// metric and /readyz saying so, keeps its positions, and once the limit is
// raised publishes the rest, every event once.
func TestFullStreamPausesIngestUntilRoomIsMade(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 31, Events: 2000, From: now.Add(-2 * 24 * time.Hour), To: now})
	e.cfg.NATS.MaxBytes = 100_000
	b := e.shared()
	get := e.endpoint()
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, zerolog.New(logs)) }()

	waitPaused(t, done, get, logs, bus.NoRoomMaxBytes, "ingest paused: the audit stream is full ([nats] max-bytes reached")
	s, err := b.JS.Stream(ctx, b.Cfg.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.CachedInfo().Config.Discard; d != jetstream.DiscardNew {
		t.Fatalf("audit stream discards %s, want DiscardNew", d)
	}
	held := s.CachedInfo().State.Msgs
	if held == 0 || held >= 2000 {
		t.Fatalf("full stream holds %d messages", held)
	}
	// Raise the limit: ingest resumes by itself.
	for _, name := range []string{b.Cfg.AuditStream, b.Cfg.SessionStream} {
		s, err := b.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		c.MaxBytes = -1
		if _, err := b.JS.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := strings.Count(logs.String(), "ingest resumed: the bus has room again"); n != 1 {
		t.Errorf("%d resume lines, want 1:\n%s", n, logs.String())
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"level":"warn"`) && strings.Contains(l, "retrying") {
			t.Errorf("retry warning while paused (the pause is logged once): %s", l)
		}
	}
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}

// TestFullStoreServerLimitPausesIngest runs NATS with a JetStream store
// limit (max_file_store) smaller than the backfill, as a full disk would
// be if nats-server could tell: publishes are answered "insufficient
// resources", ingest pauses naming the store, and after a restart of the
// server with room it publishes the rest, every event once.
func TestFullStoreServerLimitPausesIngest(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 32, Events: 2000, From: now.Add(-2 * 24 * time.Hour), To: now})
	start := func(listen string, maxStore int64) *bus.Embedded {
		emb, err := bus.StartEmbedded(context.Background(), bus.EmbeddedOptions{Listen: listen, StoreDir: e.cfg.Storage, MaxStore: maxStore, Log: zerolog.Nop()})
		if err != nil {
			t.Fatalf("start NATS: %v", err)
		}
		return emb
	}
	emb := start("127.0.0.1:0", 200_000)
	defer func() { emb.Shutdown() }()
	e.cfg.NATS.URL = emb.ClientURL()
	get := e.endpoint()
	logs := &logtest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ingest's log:\n%s", logs)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, zerolog.New(logs)) }()

	waitPaused(t, done, get, logs, bus.NoRoomStore, "ingest paused: the JetStream store is full")
	// Free space: the same store under a server with a higher limit.
	addr := strings.TrimPrefix(emb.ClientURL(), "nats://")
	emb.Shutdown()
	emb = start(addr, 0)
	if err := waitRun(t, done, 2*time.Minute); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := strings.Count(logs.String(), "ingest resumed: the bus has room again"); n != 1 {
		t.Errorf("%d resume lines, want 1:\n%s", n, logs.String())
	}
	// Its own deadline: on a loaded machine the run may have used most of
	// ctx's.
	octx, ocancel := context.WithTimeout(context.Background(), time.Minute)
	defer ocancel()
	b, err := bus.Open(octx, e.cfg.NATS, "", "test", zerolog.Nop(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}

// waitRun waits for Run's result; when it has not come within d, the test
// fails with every goroutine's stack, which shows where the run waits.
func waitRun(t *testing.T, done <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("Run has not returned %s after the server came back; goroutines:\n%s", d, buf)
		return nil
	}
}

// TestRemovedUnacknowledgedIsCounted lets max-age remove messages a
// durable consumer acknowledged only in part: the ones it had not
// acknowledged are counted and logged, once; acknowledged ones never.
func TestRemovedUnacknowledgedIsCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, teleportsim.Options{Seed: 33, Events: 1})
	b := e.shared()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Messages live an hour until the test lets max-age remove them, so a
	// slow machine fetches them all first.
	cfg := jetstream.StreamConfig{Name: "AGED", Subjects: []string{"aged.>"}, MaxAge: time.Hour, Duplicates: time.Second}
	s, err := b.JS.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		for range n {
			if _, err := b.JS.Publish(ctx, "aged.x", []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
	}
	ack := func(n int) {
		batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			got++
		}
		if got != n {
			t.Fatalf("fetched %d messages, want %d", got, n)
		}
	}
	age := func(d time.Duration) {
		cfg.MaxAge = d
		if _, err := b.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	expired := func(first uint64) {
		age(time.Second)
		defer age(time.Hour)
		if !until(nil, 30*time.Second, func() bool {
			info, err := s.Info(ctx)
			return err == nil && info.State.FirstSeq >= first
		}) {
			t.Fatalf("max-age did not remove the messages before %d", first)
		}
	}
	logs := &logtest.Buffer{}
	m := newMetrics(nil)
	w := &lossWatcher{streams: []string{"AGED"}, stream: b.StreamInfo, consumers: b.ConsumerInfos, m: m, log: zerolog.New(logs)}

	publish(10)
	ack(3)
	expired(11)
	w.poll(ctx)
	w.poll(ctx)
	if got := counterValue(t, m); got != 7 {
		t.Fatalf("counted %v messages removed unacknowledged, want 7", got)
	}
	if !strings.Contains(logs.String(), `"removed":7`) || !strings.Contains(logs.String(), "before the consumer acknowledged them") {
		t.Errorf("no log line for the 7 removed messages:\n%s", logs.String())
	}
	// Acknowledged in time: nothing more is counted when they expire.
	publish(5)
	ack(5)
	expired(16)
	w.poll(ctx)
	if got := counterValue(t, m); got != 7 {
		t.Fatalf("counted %v after acknowledged messages expired, want still 7", got)
	}
}

// counterValue reads removed_unacknowledged_total{stream="AGED",consumer="reader"}.
func counterValue(t *testing.T, m *metrics) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.removedUnacked.WithLabelValues("AGED", "reader").Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}
