package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// fakeJS records async publishes; the test resolves each one by hand.
type fakeJS struct {
	jetstream.JetStream
	sent chan *fakeFuture
}

func newFakeJS() *fakeJS { return &fakeJS{sent: make(chan *fakeFuture, 1000)} }

func (f *fakeJS) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	ff := &fakeFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	f.sent <- ff
	return ff, nil
}

// next returns the next publish, failing the test if none comes.
func (f *fakeJS) next(t *testing.T) *fakeFuture {
	t.Helper()
	select {
	case ff := <-f.sent:
		return ff
	case <-time.After(10 * time.Second):
		t.Fatal("no publish arrived")
		return nil
	}
}

type fakeFuture struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (ff *fakeFuture) Ok() <-chan *jetstream.PubAck { return ff.ok }
func (ff *fakeFuture) Err() <-chan error            { return ff.err }
func (ff *fakeFuture) Msg() *nats.Msg               { return ff.msg }
func (ff *fakeFuture) ack(seq uint64)               { ff.ok <- &jetstream.PubAck{Stream: "AUDIT", Sequence: seq} }

// results collects callback results in the order they are delivered.
type results struct {
	mu   sync.Mutex
	ids  []string
	errs []error
	got  chan struct{}
}

func newResults() *results { return &results{got: make(chan struct{}, 1000)} }

func (r *results) done(id string) PublishDone {
	return func(_ *jetstream.PubAck, err error) {
		r.mu.Lock()
		r.ids = append(r.ids, id)
		r.errs = append(r.errs, err)
		r.mu.Unlock()
		r.got <- struct{}{}
	}
}

func (r *results) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-r.got:
		case <-time.After(10 * time.Second):
			t.Fatal("callback did not arrive")
		}
	}
}

func (r *results) snapshot() ([]string, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...), append([]error(nil), r.errs...)
}

func auditEvent(i int) Event {
	return Event{ID: fmt.Sprintf("ev-%04d", i), Type: "user.login", Time: time.Unix(int64(i), 0), JSON: fmt.Appendf(nil, `{"i":%d}`, i)}
}

func closePublisher(t *testing.T, p *Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestPublisherBoundedInFlight(t *testing.T) {
	js := newFakeJS()
	p := NewPublisher(js, 3)
	defer closePublisher(t, p)
	r := newResults()
	ctx := testCtx(t)
	for i := range 3 {
		if err := p.Publish(ctx, auditEvent(i), r.done(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := p.Publish(short, auditEvent(3), r.done("3")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("4th Publish with 3 in flight: err = %v, want it to block until its context ends", err)
	}
	if len(js.sent) != 3 || p.Pending() != 3 {
		t.Fatalf("sent %d, pending %d; want 3 and 3", len(js.sent), p.Pending())
	}
	js.next(t).ack(1)
	r.wait(t, 1)
	if err := p.Publish(ctx, auditEvent(3), r.done("3")); err != nil {
		t.Fatalf("Publish after an ack freed a slot: %v", err)
	}
	for i := range 3 {
		js.next(t).ack(uint64(i + 2))
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ids, errs := r.snapshot()
	if fmt.Sprint(ids) != "[0 1 2 3]" || fmt.Sprint(errs) != "[<nil> <nil> <nil> <nil>]" {
		t.Fatalf("callbacks %v, errors %v", ids, errs)
	}
}

func TestPublisherCallbacksInPublishOrder(t *testing.T) {
	js := newFakeJS()
	p := NewPublisher(js, 10)
	defer closePublisher(t, p)
	r := newResults()
	ctx := testCtx(t)
	var futures []*fakeFuture
	for i := range 5 {
		if err := p.Publish(ctx, auditEvent(i), r.done(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		futures = append(futures, js.next(t))
	}
	// Acks arrive in reverse order; one message fails for good.
	for i := 4; i >= 0; i-- {
		if i == 2 {
			futures[i].err <- &jetstream.APIError{Code: 400, ErrorCode: 10054, Description: "message size exceeds maximum allowed"}
			continue
		}
		futures[i].ack(uint64(i + 1))
	}
	r.wait(t, 5)
	ids, errs := r.snapshot()
	if fmt.Sprint(ids) != "[0 1 2 3 4]" {
		t.Fatalf("callbacks in order %v, want publish order", ids)
	}
	for i, err := range errs {
		if (i == 2) != (err != nil) {
			t.Errorf("result %d: err = %v", i, err)
		}
	}
	if len(js.sent) != 0 {
		t.Errorf("a non-retryable error was retried")
	}
}

func TestPublisherRetriesWithSameMsgID(t *testing.T) {
	js := newFakeJS()
	p := NewPublisher(js, 4, WithRetries(3, time.Millisecond), WithPublisherLog(testLog(t)))
	defer closePublisher(t, p)
	r := newResults()
	ctx := testCtx(t)
	if err := p.Publish(ctx, auditEvent(7), r.done("7")); err != nil {
		t.Fatal(err)
	}
	js.next(t).err <- jetstream.ErrAsyncPublishTimeout
	js.next(t).err <- nats.ErrNoResponders
	third := js.next(t)
	if got := third.msg.Header.Get(HeaderMsgID); got != "ev-0007" {
		t.Fatalf("retry has Nats-Msg-Id %q, want the original", got)
	}
	third.ack(1)
	r.wait(t, 1)
	if _, errs := r.snapshot(); errs[0] != nil {
		t.Fatalf("result after retries: %v", errs[0])
	}

	// Out of attempts: the last error is reported.
	if err := p.Publish(ctx, auditEvent(8), r.done("8")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		js.next(t).err <- jetstream.ErrAsyncPublishTimeout
	}
	r.wait(t, 1)
	_, errs := r.snapshot()
	if !errors.Is(errs[1], jetstream.ErrAsyncPublishTimeout) {
		t.Fatalf("result after 3 failed attempts: %v", errs[1])
	}
}

func TestPublisherOwnAckTimeout(t *testing.T) {
	js := newFakeJS()
	p := NewPublisher(js, 4, WithAckTimeout(20*time.Millisecond), WithRetries(2, time.Millisecond))
	defer closePublisher(t, p)
	r := newResults()
	if err := p.Publish(testCtx(t), auditEvent(1), r.done("1")); err != nil {
		t.Fatal(err)
	}
	js.next(t)        // never answered
	js.next(t).ack(1) // the republish is
	r.wait(t, 1)
	if _, errs := r.snapshot(); errs[0] != nil {
		t.Fatalf("result: %v", errs[0])
	}
}

// retryLog counts the Publisher's retry rounds: it logs one line per round.
type retryLog struct {
	mu     sync.Mutex
	rounds int
}

func (l *retryLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.Contains(string(b), "publish failed, retrying") {
		l.rounds++
	}
	return len(b), nil
}

func (l *retryLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rounds
}

// A stream leader change times out the acks of everything in flight; all of
// it is published again in one round, not one message per backoff.
func TestPublisherRetriesTimedOutMessagesInOneRound(t *testing.T) {
	const n, acked, refused = 200, 50, 120
	js := newFakeJS()
	rl := &retryLog{}
	p := NewPublisher(js, 256, WithRetries(3, time.Millisecond), WithAckTimeout(time.Minute), WithPublisherLog(zerolog.New(rl)))
	defer closePublisher(t, p)
	r := newResults()
	ctx := testCtx(t)
	firsts := make([]*fakeFuture, n)
	for i := range n {
		if err := p.Publish(ctx, auditEvent(i), r.done(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		firsts[i] = js.next(t)
	}
	// The oldest fails last, so every other outcome is known when the
	// Publisher starts its retry round.
	for i := n - 1; i >= 0; i-- {
		switch i {
		case acked:
			firsts[i].ack(1)
		case refused:
			firsts[i].err <- &jetstream.APIError{Code: 400, ErrorCode: 10054, Description: "message size exceeds maximum allowed"}
		default:
			firsts[i].err <- jetstream.ErrAsyncPublishTimeout
		}
	}
	// Every timed-out message is republished before any retry is answered.
	var retries []*fakeFuture
	for range n - 2 {
		retries = append(retries, js.next(t))
	}
	var want []string
	for i := range n {
		if i != acked && i != refused {
			want = append(want, auditEvent(i).ID)
		}
	}
	var got []string
	for _, ff := range retries {
		got = append(got, ff.msg.Header.Get(HeaderMsgID))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("republished Nats-Msg-Ids %v, want each timed-out message once, in publish order: %v", got, want)
	}
	if rounds := rl.count(); rounds != 1 {
		t.Fatalf("%d retry rounds for %d timed-out messages, want 1", rounds, n-2)
	}
	for i := len(retries) - 1; i >= 0; i-- {
		retries[i].ack(uint64(i + 2))
	}
	r.wait(t, n)
	ids, errs := r.snapshot()
	for i := range n {
		if ids[i] != fmt.Sprint(i) {
			t.Fatalf("callback %d is for message %s: not in publish order", i, ids[i])
		}
		if (i == refused) != (errs[i] != nil) {
			t.Errorf("message %d: err = %v", i, errs[i])
		}
	}
	if extra := len(js.sent); extra != 0 {
		t.Errorf("%d publishes after every retry was acked, want %d in all", extra, 2*n-2)
	}
}

// Acks that never come (no async ack timeout in the JetStream context) are
// caught by the Publisher's own deadline, and those retried together too.
func TestPublisherOwnAckTimeoutRetriesTogether(t *testing.T) {
	const n = 200
	js := newFakeJS()
	rl := &retryLog{}
	p := NewPublisher(js, n, WithRetries(3, 100*time.Millisecond), WithAckTimeout(time.Second), WithPublisherLog(zerolog.New(rl)))
	defer closePublisher(t, p)
	r := newResults()
	ctx := testCtx(t)
	for i := range n {
		if err := p.Publish(ctx, auditEvent(i), r.done(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		js.next(t) // never answered
	}
	for i := range n {
		ff := js.next(t)
		if got := ff.msg.Header.Get(HeaderMsgID); got != auditEvent(i).ID {
			t.Fatalf("retry %d has Nats-Msg-Id %q, want %q", i, got, auditEvent(i).ID)
		}
		ff.ack(uint64(i + 1))
	}
	r.wait(t, n)
	_, errs := r.snapshot()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if extra := len(js.sent); extra != 0 {
		t.Errorf("%d publishes beyond one retry each", extra)
	}
	// Retried one by one this would be 200 rounds; the messages were all
	// sent well within one backoff of each other, so a slow machine may
	// split them into two rounds at most.
	if rounds := rl.count(); rounds > 2 {
		t.Errorf("%d retry rounds for %d messages that timed out together", rounds, n)
	}
}

func TestPublisherCloseAbandons(t *testing.T) {
	js := newFakeJS()
	p := NewPublisher(js, 4)
	r := newResults()
	ctx := testCtx(t)
	for i := range 2 {
		if err := p.Publish(ctx, auditEvent(i), r.done(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := p.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with unanswered publishes: %v", err)
	}
	r.wait(t, 2)
	_, errs := r.snapshot()
	for i, err := range errs {
		if !errors.Is(err, ErrPublisherClosed) {
			t.Errorf("result %d after Close: %v", i, err)
		}
	}
	if err := p.Publish(ctx, auditEvent(9), nil); !errors.Is(err, ErrPublisherClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
}

func TestPublisherRealServer(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{})
	ctx := testCtx(t)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(b.JS, 16)
	defer closePublisher(t, p)

	const n = 300
	var mu sync.Mutex
	var seqs []uint64
	var failures []error
	for i := range n {
		err := p.Publish(ctx, auditEvent(i), func(ack *jetstream.PubAck, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, err)
				return
			}
			seqs = append(seqs, ack.Sequence)
		})
		if err != nil {
			t.Fatal(err)
		}
		if p.Pending() > 16 {
			t.Fatalf("%d pending with max 16", p.Pending())
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 || len(seqs) != n {
		t.Fatalf("%d acks, failures %v", len(seqs), failures)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("callback %d has stream sequence %d after %d: not in publish order", i, seqs[i], seqs[i-1])
		}
	}
	info, err := b.StreamInfo(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("stream holds %d messages, want %d", info.State.Msgs, n)
	}
}

func TestPublishDedupWithinWindow(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{DuplicateWindow: time.Minute})
	ctx := testCtx(t)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(b.JS, 4)
	defer closePublisher(t, p)
	var acks []*jetstream.PubAck
	var mu sync.Mutex
	sess := Event{ID: "x", Type: "print", Session: true, SessionID: "s1", Index: 3, Time: time.Now(), JSON: []byte(`{}`)}
	for _, e := range []Event{auditEvent(1), auditEvent(1), sess, sess} {
		err := p.Publish(ctx, e, func(ack *jetstream.PubAck, err error) {
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			mu.Lock()
			acks = append(acks, ack)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(acks) != 4 || acks[0].Duplicate || !acks[1].Duplicate || acks[2].Duplicate || !acks[3].Duplicate {
		t.Fatalf("acks %+v: want the second copy of each reported as a duplicate", acks)
	}
	for _, stream := range []string{DefaultAuditStream, DefaultSessionStream} {
		info, err := b.StreamInfo(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 1 {
			t.Errorf("stream %s holds %d messages after publishing one event twice, want 1", stream, info.State.Msgs)
		}
	}
}

func TestPublisherSurvivesServerRestart(t *testing.T) {
	ctx := testCtx(t)
	storage := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	start := func() *Embedded {
		t.Helper()
		emb, err := StartEmbedded(ctx, EmbeddedOptions{Listen: listen, StoreDir: storage, Log: testLog(t)})
		if err != nil {
			t.Fatalf("start server: %v", err)
		}
		return emb
	}
	emb := start()
	b, err := Open(ctx, config.NATSConfig{URL: emb.ClientURL()}, "", "restart-test", testLog(t), false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(b.JS, 32, WithRetries(20, 50*time.Millisecond), WithAckTimeout(2*time.Second))
	defer closePublisher(t, p)

	var mu sync.Mutex
	var acked int
	var failures []error
	done := func(_ *jetstream.PubAck, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failures = append(failures, err)
			return
		}
		acked++
	}
	publish := func(from, to int) error {
		for i := from; i < to; i++ {
			if err := p.Publish(ctx, auditEvent(i), done); err != nil {
				return err
			}
		}
		return nil
	}
	if err := publish(0, 100); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	emb.Shutdown()
	errc := make(chan error, 1)
	go func() { errc <- publish(100, 200) }()
	emb = start()
	defer emb.Shutdown()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if acked != 200 || len(failures) > 0 {
		t.Fatalf("%d acked, failures %v", acked, failures)
	}
	info, err := b.StreamInfo(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 200 {
		t.Fatalf("stream holds %d messages after a server restart, want each of 200 once", info.State.Msgs)
	}
}

// lossyJS publishes for real but loses the PubAck of the first attempt of
// the messages in drop, as a connection cut right after the server stored
// them would; it counts every attempt per Nats-Msg-Id.
type lossyJS struct {
	jetstream.JetStream
	mu       sync.Mutex
	drop     map[string]bool
	attempts map[string]int
}

func (l *lossyJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	id := m.Header.Get(HeaderMsgID)
	l.mu.Lock()
	l.attempts[id]++
	lose := l.drop[id] && l.attempts[id] == 1
	l.mu.Unlock()
	f, err := l.JetStream.PublishMsgAsync(m, opts...)
	if err != nil || !lose {
		return f, err
	}
	return &fakeFuture{msg: m, ok: make(chan *jetstream.PubAck), err: make(chan error)}, nil // never answers
}

// A message stored whose PubAck was lost is retried after the duplicate
// window: without the tail check the stream stores it twice; with it the
// Publisher finds it in the stream and reports it as a duplicate with its
// sequence, publishing it once.
func TestPublisherRetryBeyondWindowFindsLostAck(t *testing.T) {
	for _, check := range []bool{false, true} {
		t.Run(map[bool]string{false: "window only", true: "tail check"}[check], func(t *testing.T) {
			b := openTestBus(t, config.NATSConfig{DuplicateWindow: time.Second})
			ctx := testCtx(t)
			if err := b.EnsureStreams(ctx); err != nil {
				t.Fatal(err)
			}
			lossy := &lossyJS{JetStream: b.JS, drop: map[string]bool{"ev-0002": true}, attempts: map[string]int{}}
			// The retry comes 200 ms (ack timeout) + 1.5 s (backoff) after
			// the first attempt: past the 1 s window.
			opts := []PublisherOption{WithAckTimeout(200 * time.Millisecond), WithRetries(3, 1500*time.Millisecond), WithPublisherLog(testLog(t))}
			if check {
				opts = append(opts, WithTailCheck(func(string) string { return DefaultAuditStream }, map[string]uint64{DefaultAuditStream: 0}))
			}
			p := NewPublisher(lossy, 8, opts...)
			defer closePublisher(t, p)
			var mu sync.Mutex
			acks := map[string]*jetstream.PubAck{}
			for i := 1; i <= 3; i++ {
				id := fmt.Sprintf("ev-%04d", i)
				err := p.Publish(ctx, auditEvent(i), func(ack *jetstream.PubAck, err error) {
					if err != nil {
						t.Errorf("publish %s: %v", id, err)
						return
					}
					mu.Lock()
					acks[id] = ack
					mu.Unlock()
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			info, err := b.StreamInfo(ctx, DefaultAuditStream)
			if err != nil {
				t.Fatal(err)
			}
			if !check {
				// The failure the tail check exists for.
				if info.State.Msgs != 4 || lossy.attempts["ev-0002"] != 2 {
					t.Fatalf("window only: stream holds %d messages after %d attempts of ev-0002, want the duplicate (4 after 2)",
						info.State.Msgs, lossy.attempts["ev-0002"])
				}
				return
			}
			if info.State.Msgs != 3 {
				t.Fatalf("stream holds %d messages, want 3: each event once", info.State.Msgs)
			}
			if n := lossy.attempts["ev-0002"]; n != 1 {
				t.Errorf("ev-0002 published %d times, want once (found in the stream instead)", n)
			}
			got := acks["ev-0002"]
			if got == nil || !got.Duplicate || got.Sequence != 2 || got.Stream != DefaultAuditStream {
				t.Fatalf("ev-0002's result %+v, want a duplicate PubAck with sequence 2 in %s", got, DefaultAuditStream)
			}
			if f := p.Floor(DefaultAuditStream); f != 3 {
				t.Errorf("Floor after acks up to 3: %d", f)
			}
		})
	}
}

// unreadableJS is fakeJS whose streams cannot be looked up, as while the
// connection is down.
type unreadableJS struct{ *fakeJS }

func (u unreadableJS) Stream(context.Context, string) (jetstream.Stream, error) {
	return nil, nats.ErrConnectionClosed
}

// A retry round whose stream cannot be read publishes nothing (it cannot
// tell what is there already) and counts as an attempt: with 2 attempts
// the message fails after one publish, with the first error.
func TestPublisherTailCheckUnreadablePublishesNothing(t *testing.T) {
	js := unreadableJS{newFakeJS()}
	p := NewPublisher(js, 4, WithAckTimeout(50*time.Millisecond), WithRetries(2, time.Millisecond), WithPublisherLog(testLog(t)),
		WithTailCheck(func(string) string { return "AUDIT" }, map[string]uint64{"AUDIT": 10}))
	defer closePublisher(t, p)
	r := newResults()
	if err := p.Publish(testCtx(t), auditEvent(1), r.done("1")); err != nil {
		t.Fatal(err)
	}
	js.next(t) // never answered: times out
	r.wait(t, 1)
	_, errs := r.snapshot()
	if !errors.Is(errs[0], errAckTimeout) {
		t.Fatalf("result %v, want the ack timeout", errs[0])
	}
	select {
	case ff := <-js.sent:
		t.Fatalf("published %s again without knowing whether the stream holds it", ff.msg.Header.Get(HeaderMsgID))
	default:
	}
	if f := p.Floor("AUDIT"); f != 10 {
		t.Errorf("Floor %d, want the start's 10 (nothing acknowledged)", f)
	}
}

func TestPublisherReportsSlotWaits(t *testing.T) {
	js := newFakeJS()
	w := &waits{}
	p := NewPublisher(js, 1, WithWaitObserver(w.observe))
	defer closePublisher(t, p)
	ctx := testCtx(t)
	if err := p.Publish(ctx, auditEvent(1), nil); err != nil {
		t.Fatal(err)
	}
	first := js.next(t)
	errc := make(chan error, 1)
	began := time.Now()
	go func() { errc <- p.Publish(ctx, auditEvent(2), nil) }()
	// The second publish has begun (Pending counts it) and waits for the
	// one slot; the first PubAck frees it half a second later.
	deadline := time.Now().Add(10 * time.Second)
	for p.Pending() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the second publish never began")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	first.ack(1)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	js.next(t).ack(2)
	got := w.seen()
	if len(got) != 1 || got[0].kind != WaitInFlight || got[0].d <= 0 || got[0].d > time.Since(began) {
		t.Fatalf("reported waits %v, want one in_flight wait of at most %s", got, time.Since(began))
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
