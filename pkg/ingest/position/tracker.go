package position

import (
	"context"
	"sync"
)

// Tracker finds the position that is safe to save: the position of the
// last event such that it and every event before it is acknowledged by
// JetStream (or was filtered out). PubAck callbacks arrive in publish
// order, so the safe position only moves forward. After a failed publish
// it stops moving: the events after the failure are read again on retry,
// and the retry skips the ones that did land (see floor).
//
// The tracker also knows the floor that goes with the safe position: a
// stream sequence such that every event after the position that is on
// the bus at all is stored after it. It is the stream's highest
// acknowledged sequence when the oldest event not yet safe was published
// (or now, when every event is). A retry reads the stream after the saved
// floor (the tail scan, Tail.Seen) to learn which events after the position are on the
// bus already, however long ago they were published: the duplicate
// window need not cover the time between a publish and its retry.
type Tracker[P any] struct {
	mu          sync.Mutex
	outstanding int
	tail        P // position of the newest event handled
	safe        P
	dirty       bool
	err         error
	idle        chan struct{} // closed when outstanding drops to 0; nil unless waited on

	// floorNow is the floor for an event published now (nil: 0);
	// floors are those of the events published and not yet safe, in
	// publish order (the first failed one stays first).
	floorNow func() uint64
	floors   []uint64
	// seen holds the events after the start position that were on the
	// bus when this attempt started (nil: none).
	seen map[string]struct{}

	// The events on the bus that the safe position covers, for the
	// progress saved with it (what `ingest status` adds up): counts
	// holds, per event published and not yet safe, 1 plus the events
	// found on the bus just before it (onBus); found counts those after
	// the newest published event; covered is what became safe since the
	// last commitPoint.
	counts  []int64
	found   int64
	covered int64
}

// NewTracker starts at the position already saved.
func NewTracker[P any](start P) *Tracker[P] {
	return &Tracker[P]{tail: start, safe: start}
}

// WithFloor sets how the tracker learns the floor of the events it sees
// published (Tail.FloorFunc), and the ids the tail scan found on the bus
// after the start position.
func (t *Tracker[P]) WithFloor(now func() uint64, seen map[string]struct{}) *Tracker[P] {
	t.floorNow, t.seen = now, seen
	return t
}

// OnBus reports whether the event id was found on the bus after the start
// position when this attempt started: it was published by an earlier
// attempt and is not published again.
func (t *Tracker[P]) OnBus(id string) bool {
	_, ok := t.seen[id]
	return ok
}

// Published records an event sent at position pos; call the returned
// function with the publish result.
func (t *Tracker[P]) Published(pos P) func(error) {
	t.mu.Lock()
	t.outstanding++
	t.tail = pos
	t.counts = append(t.counts, 1+t.found)
	t.found = 0
	if t.floorNow != nil {
		t.floors = append(t.floors, t.floorNow())
	}
	t.mu.Unlock()
	return func(err error) { t.acked(pos, err) }
}

// Floor is the floor of the safe position (see Tracker).
func (t *Tracker[P]) Floor() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.floorLocked()
}

func (t *Tracker[P]) floorLocked() uint64 {
	if len(t.floors) > 0 {
		return t.floors[0]
	}
	if t.floorNow == nil {
		return 0
	}
	return t.floorNow()
}

// acked is the publish result of the event at pos.
func (t *Tracker[P]) acked(pos P, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.outstanding--
	if t.outstanding == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
	if t.err != nil {
		return
	}
	if err != nil {
		t.err = err
		return
	}
	if len(t.floors) > 0 {
		t.floors = t.floors[1:]
	}
	if len(t.counts) > 0 {
		t.covered += t.counts[0]
		t.counts = t.counts[1:]
	}
	t.safe, t.dirty = pos, true
	if t.outstanding == 0 {
		t.safe = t.tail
		t.covered += t.found
		t.found = 0
	}
}

// Skipped records an event at pos that was filtered out.
func (t *Tracker[P]) Skipped(pos P) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tail = pos
	if t.outstanding == 0 && t.err == nil {
		t.safe, t.dirty = pos, true
	}
}

// FoundOnBus records an event at pos that is not published because it is
// on the bus already (an earlier attempt, or the run before a recovery,
// published it): like Skipped, but it counts as an event on the bus once
// the safe position covers it.
func (t *Tracker[P]) FoundOnBus(pos P) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tail = pos
	if t.outstanding == 0 && t.err == nil {
		t.safe, t.dirty = pos, true
		t.covered++
		return
	}
	t.found++
}

// CommitPoint is Position with, in events, how many events on the bus
// (published, or found there) the safe position covers that no earlier
// CommitPoint returned: the progress to add to what is saved with the
// position. An attempt that fails after a commitPoint whose save failed
// loses nothing: the next attempt starts from the saved position and finds
// those events on the bus.
func (t *Tracker[P]) CommitPoint() (pos P, floor uint64, moved bool, events int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.dirty
	t.dirty = false
	events, t.covered = t.covered, 0
	return t.safe, t.floorLocked(), d, events, t.err
}

// Position returns the safe position, its floor, whether it moved since
// the last call, and the first publish error.
func (t *Tracker[P]) Position() (P, uint64, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.dirty
	t.dirty = false
	return t.safe, t.floorLocked(), d, t.err
}

// Failed returns the first publish error, if any.
func (t *Tracker[P]) Failed() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Settled waits until every event published so far has its result, or
// ctx ends.
func (t *Tracker[P]) Settled(ctx context.Context) error {
	t.mu.Lock()
	if t.outstanding == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AssignFloor gives a saved position that has no floor yet (its reader
// never published from it) the floor of now, before the first publish: a
// restart then knows where its events, if any landed, are in the stream.
// It reports whether it did, and the caller saves the position; a tracker
// without floors (a dry run) assigns none.
func (t *Tracker[P]) AssignFloor(floor **uint64) bool {
	if *floor != nil || t.floorNow == nil {
		return false
	}
	f := t.Floor()
	*floor = &f
	return true
}
