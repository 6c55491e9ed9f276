package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
)

// testProbes keeps a test's outage short.
var testProbes = backoff.Policy{Base: 10 * time.Millisecond, Max: 40 * time.Millisecond}

// outageSender refuses connections while down, and counts the requests
// that overlap while the breaker is open.
type outageSender struct {
	down    atomic.Bool
	breaker *Breaker
	sends   atomic.Int64

	mu              sync.Mutex
	inFlightOpen    int
	maxInFlightOpen int
}

func (s *outageSender) Send(_ context.Context, url string, _ []json.RawMessage) (fluentd.Result, error) {
	s.sends.Add(1)
	open := s.breaker.Open()
	if open {
		s.mu.Lock()
		s.inFlightOpen++
		s.maxInFlightOpen = max(s.maxInFlightOpen, s.inFlightOpen)
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlightOpen--
			s.mu.Unlock()
		}()
	}
	// Long enough for another probe to overlap, were one let through.
	time.Sleep(2 * time.Millisecond)
	if s.down.Load() {
		return fluentd.Result{}, &fluentd.TransportError{URL: url, Err: fmt.Errorf("dial tcp: %w", syscall.ECONNREFUSED)}
	}
	return fluentd.Result{Status: 200}, nil
}

// TestDelivererHoldsBatchesThroughAnOutage: while Fluentd refuses
// connections, the batches are held (kept alive, never NAKed, so their
// delivery count does not grow), one probe at a time goes out, and when
// Fluentd is back every batch is delivered and acknowledged once. The
// breaker logs one line when it opens and one when it closes, and its
// gauge follows.
func TestDelivererHoldsBatchesThroughAnOutage(t *testing.T) {
	logs := &logtest.Buffer{}
	m := NewMetrics(nil)
	b := NewBreaker(testProbes, zerolog.New(logs), m.BreakerOpen)
	send := &outageSender{breaker: b}
	send.down.Store(true)
	var settled atomic.Int64
	d := &Deliverer{Send: send, Backoff: fastBackoff, Breaker: b, MaxDeliver: 2, AckWait: 60 * time.Millisecond,
		Metrics: m, Log: zerolog.Nop(), Settled: func(n int) { settled.Add(int64(n)) }}

	var msgs []*fakeMsg
	batch := func() *Batch {
		bt := &Batch{URL: "https://fluentd/test.log"}
		for range 5 {
			fm := &fakeMsg{data: `{}`, delivered: 1}
			msgs = append(msgs, fm)
			bt.Items = append(bt.Items, Item{Data: json.RawMessage(`{}`), Msg: fm, Received: time.Now()})
		}
		return bt
	}
	var wg sync.WaitGroup
	deliver := func(bt *Batch) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.Deliver(context.Background(), bt)
		}()
	}
	deliver(batch())
	eventually(t, 10*time.Second, "the breaker to open", b.Open)
	if g := counter(t, m.BreakerOpen); g != 1 {
		t.Errorf("breaker gauge %v while open, want 1", g)
	}
	for range 3 {
		deliver(batch())
	}
	eventually(t, 10*time.Second, "several probes and in-progress marks", func() bool {
		return send.sends.Load() >= 10 && slices.Contains(msgs[len(msgs)-1].settledCopy(), "in-progress")
	})
	send.down.Store(false)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("held batches not delivered 30s after Fluentd came back")
	}

	if send.maxInFlightOpen != 1 {
		t.Errorf("%d requests at once while the breaker was open, want 1 (the probe)", send.maxInFlightOpen)
	}
	for i, fm := range msgs {
		got := fm.settledCopy()
		acks := 0
		for _, s := range got {
			if s == "ack" {
				acks++
			}
		}
		if acks != 1 || got[len(got)-1] != "ack" || slices.Contains(got, "nak") || slices.Contains(got, "nak-delay") {
			t.Errorf("message %d settled %v, want in-progress marks then one ack", i, got)
		}
	}
	if n := settled.Load(); n != int64(len(msgs)) {
		t.Errorf("settled %d, want %d", n, len(msgs))
	}
	if b.Open() || counter(t, m.BreakerOpen) != 0 {
		t.Errorf("breaker open %v, gauge %v after recovery", b.Open(), counter(t, m.BreakerOpen))
	}
	out := logs.String()
	if n := strings.Count(out, "fluentd refuses events: "); n != 1 || !strings.Contains(out, "pausing delivery, probing every 10ms to 40ms") {
		t.Errorf("%d opening lines, want 1 saying it pauses and probes:\n%s", n, out)
	}
	if n := strings.Count(out, "fluentd accepts events again; delivery resumed"); n != 1 {
		t.Errorf("%d closing lines, want 1:\n%s", n, out)
	}
}

// TestBreakerFlappingLogsOnce: a Fluentd failing one request in a few
// opens and closes the breaker again and again; it writes one pair of lines
// per breakerLogEvery, and counts the rest.
func TestBreakerFlappingLogsOnce(t *testing.T) {
	logs := &logtest.Buffer{}
	b := NewBreaker(testProbes, zerolog.New(logs).Level(zerolog.InfoLevel), nil)
	cause := &fluentd.StatusError{URL: "https://fluentd/test.log", Result: fluentd.Result{Status: 500}}
	for range 5 {
		b.Report(false, cause)
		if !b.Open() {
			t.Fatal("a 500 did not open the breaker")
		}
		b.Report(false, nil)
		if b.Open() {
			t.Fatal("an answer did not close the breaker")
		}
	}
	out := logs.String()
	if strings.Count(out, "fluentd refuses events: ") != 1 || strings.Count(out, "fluentd accepts events again") != 1 {
		t.Errorf("want one opening and one closing line for five flaps:\n%s", out)
	}
	if !strings.Contains(out, "answered 500") {
		t.Errorf("the opening line does not say why:\n%s", out)
	}
}

// TestBreakerTurnWaitsForTheProbe: while open, one caller at a time gets
// the probe; the others wait until it reports, and go at once when it
// closes the breaker; a wait that runs out says the breaker is still open.
func TestBreakerTurnWaitsForTheProbe(t *testing.T) {
	b := NewBreaker(backoff.Policy{Base: time.Millisecond, Max: time.Millisecond}, zerolog.Nop(), nil)
	b.Report(false, &fluentd.StatusError{Result: fluentd.Result{Status: 503}})
	ctx := context.Background()
	probe, err := b.Turn(ctx, 0)
	if err != nil || !probe {
		t.Fatalf("first turn while open: probe %v, %v; want the probe", probe, err)
	}
	if _, err := b.Turn(ctx, 50*time.Millisecond); err != ErrStillOpen {
		t.Fatalf("second turn while a probe is out: %v, want ErrStillOpen", err)
	}
	waiting := make(chan error, 1)
	go func() {
		p, err := b.Turn(ctx, 0)
		if err == nil && p {
			err = fmt.Errorf("got a probe after the breaker closed")
		}
		waiting <- err
	}()
	b.Report(true, nil)
	select {
	case err := <-waiting:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting sender did not go when the breaker closed")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Turn(cctx, 0); err != context.Canceled {
		t.Fatalf("turn with a cancelled context: %v", err)
	}
}

// TestDelivererHandsHeldBatchesBackOnStop: batches held while Fluentd
// refuses events are handed back (NAKed at once, for another sink) as soon
// as the sink stops taking messages, instead of being held until the
// shutdown timeout for an answer that is not coming. The send context is
// still alive: only Stopping ended.
func TestDelivererHandsHeldBatchesBackOnStop(t *testing.T) {
	b := NewBreaker(testProbes, zerolog.Nop(), nil)
	send := &outageSender{breaker: b}
	send.down.Store(true)
	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	var settled atomic.Int64
	d := &Deliverer{Send: send, Backoff: fastBackoff, Breaker: b, MaxDeliver: 2, AckWait: time.Minute,
		Stopping: stopping, Metrics: NewMetrics(nil), Log: zerolog.Nop(), Settled: func(n int) { settled.Add(int64(n)) }}

	var msgs []*fakeMsg
	var wg sync.WaitGroup
	for range 3 {
		bt := &Batch{URL: "https://fluentd/test.log"}
		for range 4 {
			fm := &fakeMsg{data: `{}`, delivered: 1}
			msgs = append(msgs, fm)
			bt.Items = append(bt.Items, Item{Data: json.RawMessage(`{}`), Msg: fm, Received: time.Now()})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.Deliver(context.Background(), bt)
		}()
	}
	eventually(t, 10*time.Second, "the breaker to open and probes to fail", func() bool {
		return b.Open() && send.sends.Load() >= 4
	})
	stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("held batches still held 10s after the sink stopped")
	}
	for i, fm := range msgs {
		got := fm.settledCopy()
		if len(got) == 0 || got[len(got)-1] != "nak" || slices.Contains(got, "ack") {
			t.Errorf("message %d settled %v, want it handed back (nak) and never acknowledged", i, got)
		}
	}
	if n := settled.Load(); n != int64(len(msgs)) {
		t.Errorf("settled %d, want %d", n, len(msgs))
	}
}
