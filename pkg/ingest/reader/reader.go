// Package reader holds the readers of Teleport: each reads one kind of
// source and hands every event it keeps to an Outlet, saving its own
// slice of the positions (pkg/ingest/position) as the events are
// acknowledged. The Exporter (export.go) reads the bulk export API date by
// date, chunks in parallel; the Searcher (search.go) pages through
// SearchUnstructuredEvents window by window, the path of servers without
// the export API and of --cursor. Both pass each audit event through Audit
// (audit.go): the filter (event.go), the registration of the recording a
// session.upload announces, and the check against what is on the bus
// already. Sessions (sessions.go) streams those recordings: a queue of
// jobs (queue.go), the retry and give-up policy of a recording not there
// yet (giveup.go), and the streaming of one recording (recording.go). A
// reader is built from what it uses — a source interface, an Outlet, its
// position slice, a Tail and a Progress — and knows nothing of the run
// that builds it.
package reader

import (
	"context"
	"errors"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// Outlet is where the readers' events go: the run's publisher in front of
// the bus.
type Outlet interface {
	// Send publishes e; done gets the result (nil on a PubAck), in the
	// order of the sends. An error return means e was not published and
	// done will not be called.
	Send(ctx context.Context, e bus.Event, done func(error)) error
	// Flush waits for the result of every event sent.
	Flush(ctx context.Context) error
	// OnBus reports whether e is on the bus already (a recovery found it
	// there): it is not published again, and counts as handled.
	OnBus(e bus.Event) bool
}

// Progress counts what the readers did, for the run's progress lines.
type Progress interface {
	// SetDates records how many dates the backfill spans and how many
	// are done.
	SetDates(total, done int)
	// DateDone records one more date whose chunks are all exported.
	DateDone()
	// ChunkDone records one export chunk finished.
	ChunkDone()
	// Event records one acknowledged audit event of time at.
	Event(at time.Time)
}

// commitEvery is how often a reader saves its acknowledged position while
// events flow; a crash re-reads at most this much, and the tail scan finds
// what of it is on the bus already.
const commitEvery = time.Second

// Retryable reports whether a read or publish error is worth another try.
func Retryable(err error) bool {
	return errors.Is(err, position.ErrBus) || teleport.IsTransient(err)
}

// NoRoom reports whether err is the bus refusing events for want of room
// (a full stream or store): a pause the run logs once.
func NoRoom(err error) bool {
	_, ok := bus.NoRoom(err)
	return ok
}

// BusRetryMax caps the wait before retrying after NATS failed (a state
// save, a publish or a scan that timed out): after a node loss the
// cluster answers again once it has elected leaders, within seconds, and
// a wait grown during the election would only add to the stall. A full
// stream or store (NoRoom) keeps the longer waits: it lasts until someone
// makes room.
const BusRetryMax = 2 * time.Second

// RetryDelay is the wait before retrying after err: the backoff's next
// delay, capped at BusRetryMax for a bus failure other than no room.
func RetryDelay(b *backoff.Backoff, err error) time.Duration {
	return capBus(b.Next(), err)
}

// capBus caps d at BusRetryMax when err is a bus failure other than no
// room.
func capBus(d time.Duration, err error) time.Duration {
	if errors.Is(err, position.ErrBus) && !NoRoom(err) {
		return min(d, BusRetryMax)
	}
	return d
}
