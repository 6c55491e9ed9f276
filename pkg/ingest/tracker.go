package ingest

import (
	"context"
	"sync"
)

// tracker finds the position that is safe to save: the position of the
// last event such that it and every event before it is acknowledged by
// JetStream (or was filtered out). PubAck callbacks arrive in publish
// order, so the safe position only moves forward. After a failed publish
// it stops moving: the events after the failure are read again on retry,
// and JetStream's dedup drops the ones that did land.
type tracker[P any] struct {
	mu          sync.Mutex
	outstanding int
	tail        P // position of the newest event handled
	safe        P
	dirty       bool
	err         error
	idle        chan struct{} // closed when outstanding drops to 0; nil unless waited on
}

// newTracker starts at the position already saved.
func newTracker[P any](start P) *tracker[P] {
	return &tracker[P]{tail: start, safe: start}
}

// published records an event sent at position pos; call the returned
// function with the publish result.
func (t *tracker[P]) published(pos P) func(error) {
	t.mu.Lock()
	t.outstanding++
	t.tail = pos
	t.mu.Unlock()
	return func(err error) { t.acked(pos, err) }
}

// acked is the publish result of the event at pos.
func (t *tracker[P]) acked(pos P, err error) {
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
	t.safe, t.dirty = pos, true
	if t.outstanding == 0 {
		t.safe = t.tail
	}
}

// skipped records an event at pos that was filtered out.
func (t *tracker[P]) skipped(pos P) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tail = pos
	if t.outstanding == 0 && t.err == nil {
		t.safe, t.dirty = pos, true
	}
}

// position returns the safe position, whether it moved since the last
// call, and the first publish error.
func (t *tracker[P]) position() (P, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.dirty
	t.dirty = false
	return t.safe, d, t.err
}

// failed returns the first publish error, if any.
func (t *tracker[P]) failed() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// settled waits until every event published so far has its result, or
// ctx ends.
func (t *tracker[P]) settled(ctx context.Context) error {
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
