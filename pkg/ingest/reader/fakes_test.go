package reader

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// fakeOutlet is an Outlet without a bus: it records what it is sent and
// acknowledges each event at once, or through ack when set (which may
// hold it, or fail it). The ids in onBus are on the bus already.
type fakeOutlet struct {
	ack   func(e bus.Event, done func(error))
	onBus map[string]bool

	mu      sync.Mutex
	sent    []bus.Event
	pending int
	idle    *sync.Cond
}

func (o *fakeOutlet) Send(_ context.Context, e bus.Event, done func(error)) error {
	o.mu.Lock()
	o.sent = append(o.sent, e)
	o.pending++
	ack := o.ack
	o.mu.Unlock()
	settle := func(err error) {
		done(err)
		o.mu.Lock()
		o.pending--
		o.cond().Broadcast()
		o.mu.Unlock()
	}
	if ack != nil {
		ack(e, settle)
		return nil
	}
	settle(nil)
	return nil
}

// Flush waits until every event sent has its result, or ctx ends.
func (o *fakeOutlet) Flush(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		o.mu.Lock()
		o.cond().Broadcast()
		o.mu.Unlock()
	})
	defer stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.pending > 0 && ctx.Err() == nil {
		o.cond().Wait()
	}
	return ctx.Err()
}

func (o *fakeOutlet) OnBus(e bus.Event) bool { return o.onBus[e.MsgID()] }

// cond is the condition Flush waits on; o.mu is held.
func (o *fakeOutlet) cond() *sync.Cond {
	if o.idle == nil {
		o.idle = sync.NewCond(&o.mu)
	}
	return o.idle
}

// ids are the ids of the events sent, in order.
func (o *fakeOutlet) ids() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	ids := make([]string, len(o.sent))
	for i, e := range o.sent {
		ids[i] = e.ID
	}
	return ids
}

// events are the events sent, in order.
func (o *fakeOutlet) events() []bus.Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.sent)
}

// fakeProgress counts what a reader reports.
type fakeProgress struct {
	total, done, datesDone, chunks, events atomic.Int64
}

func (p *fakeProgress) SetDates(total, done int) {
	p.total.Store(int64(total))
	p.done.Store(int64(done))
}
func (p *fakeProgress) DateDone()       { p.datesDone.Add(1) }
func (p *fakeProgress) ChunkDone()      { p.chunks.Add(1) }
func (p *fakeProgress) Event(time.Time) { p.events.Add(1) }

// wantOnce fails unless got holds every id of want once, in any order.
func wantOnce(t *testing.T, got, want []string) {
	t.Helper()
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Fatalf("sent %d events (%d distinct); want the %d expected once each", len(got), len(slices.Compact(slices.Clone(got))), len(want))
	}
}
