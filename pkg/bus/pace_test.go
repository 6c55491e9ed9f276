package bus

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// fakePace is a WritePace of limit bytes on a clock the test moves.
func fakePace(limit int64) (*WritePace, *time.Time) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	p := NewWritePace(limit)
	p.now = func() time.Time { return now }
	return p, &now
}

func TestWritePaceHoldsTheWindowToItsLimit(t *testing.T) {
	p, now := fakePace(1000)
	start := *now
	step := func(at time.Duration, n int64, want time.Duration) {
		t.Helper()
		*now = start.Add(at)
		if got := p.reserve(n); got != want {
			t.Errorf("at +%s, %d bytes: wait %s, want %s", at, n, got, want)
		}
	}
	step(0, 600, 0)
	step(time.Second, 300, 0)
	// 1300 > 1000: room when the 600 leaves the window, 11 s after it
	// came; nothing is counted meanwhile, so asking again says the same.
	step(2*time.Second, 400, 9*time.Second)
	step(2*time.Second, 400, 9*time.Second)
	// Larger than the limit: waits for every byte before it to leave.
	step(3*time.Second, 5000, (12-3)*time.Second)
	// When the 600 has left, the 400 fits beside the 300.
	step(11*time.Second, 400, 0)
	// The 5000 goes once the window is empty, alone.
	step(13*time.Second, 5000, 9*time.Second)
	step(22*time.Second, 5000, 0)
	step(22*time.Second, 1, 11*time.Second)
	// Long after everything: free again, and the old entries are dropped.
	step(time.Minute, 1000, 0)
	if len(p.slots) != 1 || p.total != 1000 {
		t.Errorf("after the window: %d entries of %d bytes, want 1 of 1000", len(p.slots), p.total)
	}
}

func TestWritePaceWaitsOnlyWhenPressed(t *testing.T) {
	p, now := fakePace(1000)
	pressed, asked := false, 0
	p.WhenPressed(func() bool { asked++; return pressed })
	// Under the limit the pressure is not asked.
	if d := p.reserve(800); d != 0 || asked != 0 {
		t.Fatalf("800 bytes into an empty window: wait %s, pressure asked %d times; want 0 and 0", d, asked)
	}
	// Over the limit, memory not short: it goes at once, and counts.
	*now = now.Add(time.Second)
	if d := p.reserve(800); d != 0 || asked != 1 {
		t.Fatalf("800 more, not pressed: wait %s, pressure asked %d times; want 0 and 1", d, asked)
	}
	if p.total != 1600 {
		t.Fatalf("window holds %d bytes, want 1600", p.total)
	}
	// Memory short: it waits for the first send to leave the window, 11 s
	// after it came, 10 s from now.
	pressed = true
	if d := p.reserve(100); d != 10*time.Second {
		t.Fatalf("100 bytes, pressed, 1600 in the window: wait %s, want 10s", d)
	}
	// The pressure gone, it goes.
	pressed = false
	if d := p.reserve(100); d != 0 {
		t.Fatalf("100 bytes, no longer pressed: wait %s, want 0", d)
	}
}

func TestWritePaceMergesSendsWithinASlot(t *testing.T) {
	p, now := fakePace(1 << 30)
	for i := range 10_000 {
		*now = now.Add(time.Millisecond)
		if d := p.reserve(100); d != 0 {
			t.Fatalf("send %d waited %s under the limit", i, d)
		}
	}
	// 10 s of sends, one entry per 100 ms slot.
	if len(p.slots) > 101 || p.total != 1_000_000 {
		t.Errorf("%d entries of %d bytes for 10,000 sends over 10 s, want at most 101 of 1000000", len(p.slots), p.total)
	}
}

func TestPublisherWaitsForThePace(t *testing.T) {
	js := newFakeJS()
	p := NewPublisher(js, 16, WithPace(NewWritePace(1)))
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.Close(ctx) // the one message sent never gets its PubAck
	}()
	ctx := testCtx(t)
	if err := p.Publish(ctx, auditEvent(1), nil); err != nil {
		t.Fatal(err)
	}
	// The window holds the first message for ServerCacheWindow: the
	// second one cannot be sent before the deadline.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err := p.Publish(short, auditEvent(2), nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "block caches") {
		t.Fatalf("second publish: %v, want a deadline waiting for the block caches", err)
	}
	if n := len(js.sent); n != 1 {
		t.Errorf("%d messages sent, want 1", n)
	}
}

func TestStoredSizeCountsSubjectHeadersAndBody(t *testing.T) {
	m := nats.NewMsg("audit.user.login")
	m.Data = []byte(`{"a":1}`)
	m.Header.Set("Nats-Msg-Id", "x")
	// 30 record + 12 header framing + 16 subject + 7 body + len("Nats-Msg-Id: x\r\n") 16
	if got, want := StoredSize(m), int64(30+12+16+7+16); got != want {
		t.Errorf("StoredSize = %d, want %d", got, want)
	}
}

// waits records what WithWaitObserver reports.
type waits struct {
	mu  sync.Mutex
	got []waitSeen
}

type waitSeen struct {
	kind PublishWait
	d    time.Duration
}

func (w *waits) observe(kind PublishWait, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, waitSeen{kind, d})
}

func (w *waits) seen() []waitSeen {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]waitSeen(nil), w.got...)
}

// pacedAfterOne is a Publisher under pace, with its waits recorded, that
// has published one message: the window holds it.
func pacedAfterOne(t *testing.T, pace *WritePace) (context.Context, *fakeJS, *Publisher, *waits) {
	t.Helper()
	js := newFakeJS()
	w := &waits{}
	p := NewPublisher(js, 16, WithPace(pace), WithWaitObserver(w.observe))
	t.Cleanup(func() { closePublisher(t, p) })
	ctx := testCtx(t)
	if err := p.Publish(ctx, auditEvent(1), nil); err != nil {
		t.Fatal(err)
	}
	return ctx, js, p, w
}

func TestPublisherReportsPaceWaits(t *testing.T) {
	// A window of a second on the real clock: the second message waits
	// until the first one leaves it.
	ctx, js, p, w := pacedAfterOne(t, &WritePace{limit: 1, window: time.Second, now: time.Now})
	if got := w.seen(); len(got) != 0 {
		t.Fatalf("first publish, into an empty window: reported waits %v, want none", got)
	}
	start := time.Now()
	if err := p.Publish(ctx, auditEvent(2), nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	got := w.seen()
	if len(got) != 1 || got[0].kind != WaitPace || got[0].d <= 0 || got[0].d > took {
		t.Fatalf("second publish (took %s): reported waits %v, want one write_pace wait of at most that", took, got)
	}
	for i := range 2 {
		js.next(t).ack(uint64(i + 1))
	}
}

func TestPublisherGoesWhenThePressureEnds(t *testing.T) {
	var pressed atomic.Bool
	pressed.Store(true)
	// A minute's window: the second message would wait that long while
	// memory is short; it goes once it no longer is.
	ctx, js, p, w := pacedAfterOne(t, (&WritePace{limit: 1, window: time.Minute, now: time.Now}).WhenPressed(pressed.Load))
	errc := make(chan error, 1)
	go func() { errc <- p.Publish(ctx, auditEvent(2), nil) }()
	select {
	case err := <-errc:
		t.Fatalf("second publish returned (%v) while memory was short and the window full", err)
	case <-time.After(500 * time.Millisecond):
	}
	pressed.Store(false)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("second publish still waiting 30 s after memory stopped being short")
	}
	if got := w.seen(); len(got) != 1 || got[0].kind != WaitPace || got[0].d < 500*time.Millisecond {
		t.Errorf("reported waits %v, want one write_pace wait of at least 500ms", got)
	}
	for i := range 2 {
		js.next(t).ack(uint64(i + 1))
	}
}
