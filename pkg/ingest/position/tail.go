package position

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// Floorer is the part of *bus.Publisher a Tail uses: the floor of a
// message published now to a stream (see bus.WithTailCheck).
type Floorer interface {
	Floor(stream string) uint64
}

// Tail is one stream as a resuming reader sees it: where a message
// published now will be stored at the earliest (FloorFunc), and which
// events are stored after a saved floor (Seen). A nil *Tail is a dry run:
// no floors, nothing on the bus.
type Tail struct {
	js     jetstream.JetStream
	pub    Floorer
	stream string
	log    zerolog.Logger
}

// NewTail is the tail of stream, read through js, with the floors of pub.
func NewTail(js jetstream.JetStream, pub Floorer, stream string, log zerolog.Logger) *Tail {
	return &Tail{js: js, pub: pub, stream: stream, log: log}
}

// resumeWait bounds Seen's wait for its stream to answer.
const resumeWait = 30 * time.Second

// FloorFunc is the floor of an event published now (nil for a dry run).
func (t *Tail) FloorFunc() func() uint64 {
	if t == nil {
		return nil
	}
	return func() uint64 { return t.pub.Floor(t.stream) }
}

// Seen is the tail scan: what a reader resuming from a saved position
// needs to publish each event once, whatever the duplicate window — the
// ids of the messages stored after floor, the saved position's. Every
// event after the position that an earlier attempt published is among
// them. A nil floor with progress (a position saved by a version that
// kept no floor) reads the whole stream; a nil floor without progress is
// a reader that never published, which needs nothing.
func (t *Tail) Seen(ctx context.Context, floor *uint64, progress bool) (map[string]struct{}, error) {
	if t == nil || (floor == nil && !progress) {
		return nil, nil
	}
	var after uint64
	if floor != nil {
		after = *floor
	} else {
		t.log.Info().Str("stream", t.stream).
			Msg("a position saved by an older version has no floor: reading every message id of the stream once, to publish only what is missing")
	}
	// A retry after a node loss waits here until the stream has a leader
	// again, asking often (a read sent during the election would wait the
	// whole API timeout), for at most resumeWait before it fails the attempt.
	wctx, cancel := context.WithTimeout(ctx, resumeWait)
	err := bus.WaitStream(wctx, t.js, t.stream)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: learn which events after the saved position are on the bus: %w", ErrBus, err)
	}
	seen := map[string]struct{}{}
	n, err := bus.ScanTail(ctx, t.js, t.stream, after, func(id string, _ uint64) { seen[id] = struct{}{} })
	if err != nil {
		return nil, fmt.Errorf("%w: learn which events after the saved position are on the bus: %w", ErrBus, err)
	}
	if n > 0 {
		t.log.Debug().Str("stream", t.stream).Uint64("after_seq", after).Int("messages", n).
			Msg("resuming: read the stream after the saved position's floor; events found there are not published again")
	}
	return seen, nil
}

// Resume is the tracker of a reader starting at its saved position start,
// whose floor is floor (nil: none saved) and which published from it
// before when progress is set: the tail scan tells it which events are on
// the bus already.
func Resume[P any](ctx context.Context, t *Tail, start P, floor *uint64, progress bool) (*Tracker[P], error) {
	seen, err := t.Seen(ctx, floor, progress)
	if err != nil {
		return nil, err
	}
	return NewTracker(start).WithFloor(t.FloorFunc(), seen), nil
}
