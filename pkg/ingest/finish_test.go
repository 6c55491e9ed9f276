package ingest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// freeListen is a loopback address nothing listens on, so a test can
// reach the embedded server that ingest starts there.
func freeListen(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// eventually polls cond until it holds, failing the test after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connect connects to the embedded server of a running ingest, once it
// listens.
func (e *env) connect(ctx context.Context) *bus.Bus {
	e.t.Helper()
	var b *bus.Bus
	eventually(e.t, 60*time.Second, "ingest's embedded server", func() bool {
		var err error
		b, err = bus.Open(ctx, e.cfg.NATS, "", "reader", zerolog.Nop(), false)
		return err == nil
	})
	return b
}

// addDurable creates the streams and a durable pull consumer in e's store
// before ingest runs, as a sink that ran earlier would have.
func (e *env) addDurable(name string) {
	e.t.Helper()
	b := e.open()
	ctx := context.Background()
	if err := b.EnsureStreams(ctx); err != nil {
		e.t.Fatal(err)
	}
	if _, err := b.JS.CreateOrUpdateConsumer(ctx, b.Cfg.AuditStream, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		e.t.Fatal(err)
	}
	b.Close()
}

// TestExitOnLastEventWaitsForTheDurableConsumers: with the embedded server,
// ingest records that it is caught up, then stays until a durable consumer
// has fetched and acknowledged every message, and only then exits 0.
func TestExitOnLastEventWaitsForTheDurableConsumers(t *testing.T) {
	defer func(d time.Duration) { finishLogEvery = d }(finishLogEvery)
	finishLogEvery = 0 // log every look at the consumers
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 31, Events: 200, From: now.Add(-2 * time.Hour), To: now})
	e.cfg.NATS.Listen = freeListen(t)
	e.addDurable("reader")

	logs := &logtest.Buffer{}
	done := make(chan error, 1)
	go func() { done <- e.run(zerolog.New(logs)) }()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := e.connect(ctx)
	defer b.Close()
	r := &bus.CaughtUpReader{NC: b.Conn, Bucket: b.Cfg.StateBucket}
	var cu *bus.CaughtUp
	eventually(t, 60*time.Second, "ingest to say it is caught up", func() bool {
		var err error
		if cu, err = r.Read(ctx); err != nil {
			t.Fatal(err)
		}
		return cu != nil
	})
	total := len(e.sim.AllEventIDs())
	if got := cu.Streams[b.Cfg.AuditStream]; got != uint64(total) {
		t.Errorf("caught-up audit sequence %d, want %d", got, total)
	}
	eventually(t, 60*time.Second, "ingest to wait for the consumer", func() bool {
		return strings.Contains(logs.String(), `"waiting_for":"consumer \"reader\" on stream \"`+b.Cfg.AuditStream+`\" has `+fmt.Sprint(total)+` pending`)
	})
	select {
	case err := <-done:
		t.Fatalf("ingest exited (%v) with %d messages undelivered", err, total)
	default:
	}

	c, err := b.JS.Consumer(ctx, b.Cfg.AuditStream, "reader")
	if err != nil {
		t.Fatal(err)
	}
	acked := 0
	for acked < total {
		batch, err := c.Fetch(100, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			acked++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	b.Close() // a sink with exit-on-last-event disconnects when done
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("ingest did not exit after the consumer delivered everything:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "every durable consumer has delivered everything") {
		t.Errorf("no log line about the consumers:\n%s", logs)
	}
}

// TestExitOnLastEventDrainTimeout: a durable consumer nobody reads makes
// exit-on-last-event fail after ingest.exit-drain-timeout, naming it and
// its backlog.
func TestExitOnLastEventDrainTimeout(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 33, Events: 40, From: now.Add(-time.Hour), To: now})
	e.cfg.Ingest.ExitDrainTimeout = 2 * time.Second
	e.addDurable("nobody")
	err := e.run(zerolog.Nop())
	total := len(e.sim.AllEventIDs())
	want := fmt.Sprintf(`exit-on-last-event: consumer "nobody" on stream %q has %d pending and 0 unacknowledged after 2s (ingest.exit-drain-timeout); the events stay in the stream for its next run (is its sink running and Fluentd reachable?)`,
		bus.DefaultAuditStream, total)
	if err == nil || err.Error() != want {
		t.Fatalf("Run: %v\nwant: %s", err, want)
	}
}

// TestExitOnLastEventWithoutConsumers: with no durable consumer there is
// nothing to wait for; ingest says so and exits 0, and the caught-up key
// it leaves is cleared when the next run starts reading.
func TestExitOnLastEventWithoutConsumers(t *testing.T) {
	defer func(d time.Duration) { finishConsumerWait = d }(finishConsumerWait)
	finishConsumerWait = time.Second
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 35, Events: 40, From: now.Add(-time.Hour), To: now})
	e.cfg.NATS.Listen = freeListen(t)
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, line := range []string{
		`"up_to":1000,"message":"no durable consumer reads the streams yet; waiting for one (a sink that is starting)"`,
		"no durable consumer reads the streams, so nothing is waited for",
	} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, logs)
		}
	}

	// The next run, a long-running one, clears the key as it starts.
	e.cfg.ExitOnLastEvent = false
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(rctx, e.cfg, zerolog.Nop()) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("second Run: %v", err)
		}
	}()
	b := e.connect(ctx)
	defer b.Close()
	r := &bus.CaughtUpReader{NC: b.Conn, Bucket: b.Cfg.StateBucket}
	eventually(t, 60*time.Second, "the second run to clear the caught-up key", func() bool {
		cu, err := r.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cu == nil
	})
}
