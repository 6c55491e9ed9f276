package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// publisher is the part of *bus.Publisher ingest uses: asynchronous
// publishing with results reported in publish order.
type publisher interface {
	Publish(ctx context.Context, e bus.Event, done bus.PublishDone) error
	Flush(ctx context.Context) error
	Floor(stream string) uint64
}

// errBus marks errors from the bus side (a publish or a state write that
// failed, typically while NATS is unreachable); they are retried like
// Teleport's transient errors.
var errBus = errors.New("bus")

// outlet is the last stage before the bus: it trims oversized events,
// counts, and hands events to the publisher (or, in a dry run, logs them
// and reports success at once).
type outlet struct {
	pub   publisher // nil in a dry run
	limit int       // largest message the stream accepts (0: no limit)
	m     *metrics
	log   zerolog.Logger
	// guard learns the acknowledged sequences (nil in a dry run).
	guard *guard
	// skip holds the events already on the bus during a recovery.
	skip *skipSet
	// storage is the embedded server's directory, for the pause message.
	storage string
	// gate, when set, is waited on before every publish: the lease's,
	// which holds publishing while the lease is not known to be this
	// process's (lease.gate).
	gate func(context.Context) error
	// js reads the streams' tails (resumeSet); audit and sessions name
	// the streams events go to. Unset in a dry run.
	js              jetstream.JetStream
	audit, sessions string
}

// onBus reports whether e is on the bus already (a recovery re-reads it):
// it is not published again, and counts as handled.
func (o *outlet) onBus(e bus.Event) bool {
	return o.skip.has(e.MsgID())
}

// stream is the stream an event goes to.
func (o *outlet) stream(session bool) string {
	if session {
		return o.sessions
	}
	return o.audit
}

// floorFunc is the floor (see tracker) of an event published now to the
// audit or the session stream; nil in a dry run.
func (o *outlet) floorFunc(session bool) func() uint64 {
	if o.pub == nil {
		return nil
	}
	stream := o.stream(session)
	return func() uint64 { return o.pub.Floor(stream) }
}

// resumeWait bounds resumeSet's wait for its stream to answer.
const resumeWait = 30 * time.Second

// resumeSet is what a reader resuming from a saved position needs to
// publish each event once, whatever the duplicate window: the ids of the
// messages stored after floor (the saved position's, see tracker) in the
// audit or the session stream. Every event after the position that an
// earlier attempt published is among them. A nil floor with progress
// (a position saved by a version that kept no floor) reads the whole
// stream; a nil floor without progress is a reader that never
// published, which needs nothing.
func (o *outlet) resumeSet(ctx context.Context, session bool, floor *uint64, progress bool) (map[string]struct{}, error) {
	if o.js == nil || (floor == nil && !progress) {
		return nil, nil
	}
	stream := o.stream(session)
	var after uint64
	if floor != nil {
		after = *floor
	} else {
		o.log.Info().Str("stream", stream).
			Msg("a position saved by an older version has no floor: reading every message id of the stream once, to publish only what is missing")
	}
	// A retry after a node loss waits here until the stream has a leader
	// again, asking often (a read sent during the election would wait the
	// whole API timeout), for at most resumeWait before it fails the attempt.
	wctx, cancel := context.WithTimeout(ctx, resumeWait)
	err := bus.WaitStream(wctx, o.js, stream)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: learn which events after the saved position are on the bus: %w", errBus, err)
	}
	seen := map[string]struct{}{}
	n, err := bus.ScanTail(ctx, o.js, stream, after, func(id string, _ uint64) { seen[id] = struct{}{} })
	if err != nil {
		return nil, fmt.Errorf("%w: learn which events after the saved position are on the bus: %w", errBus, err)
	}
	if n > 0 {
		o.log.Debug().Str("stream", stream).Uint64("after_seq", after).Int("messages", n).
			Msg("resuming: read the stream after the saved position's floor; events found there are not published again")
	}
	return seen, nil
}

// send publishes e; done gets the result (nil error on success). An error
// return means e was not published and done will not be called.
func (o *outlet) send(ctx context.Context, e bus.Event, done func(error)) error {
	fitted, err := fit(e, o.limit)
	if err != nil {
		return err
	}
	if fitted.Trimmed {
		o.m.trimmed.Inc()
		o.log.Warn().Str("id", e.MsgID()).Str("type", e.Type).Int("size", len(e.JSON)).Int("trimmed_size", len(fitted.JSON)).
			Msg("event larger than the stream's maximum message size: largest fields trimmed")
	}
	if o.pub == nil {
		o.log.Info().Str("subject", fitted.Subject()).Str("id", fitted.MsgID()).Str("type", fitted.Type).
			Time("time", fitted.Time).RawJSON("event", fitted.JSON).Msg("dry run: would publish")
		o.count(fitted)
		done(nil)
		return nil
	}
	if o.gate != nil {
		if err := o.gate(ctx); err != nil {
			return err
		}
	}
	err = o.pub.Publish(ctx, fitted, func(ack *jetstream.PubAck, err error) {
		if err != nil {
			o.m.pause.refused(o.log, err, o.storage, streamKind(fitted.Session))
			done(fmt.Errorf("%w: publish %s to %s: %w", errBus, fitted.MsgID(), fitted.Subject(), err))
			return
		}
		o.m.pause.published(o.log, streamKind(fitted.Session), ack != nil && ack.Duplicate)
		o.guard.acked(ack)
		o.count(fitted)
		done(nil)
	})
	if err != nil {
		return fmt.Errorf("%w: publish %s: %w", errBus, fitted.MsgID(), err)
	}
	return nil
}

// count records one published event.
func (o *outlet) count(e bus.Event) {
	if e.Session {
		o.m.sessionEvents.Inc()
		return
	}
	o.m.published.WithLabelValues(e.Type).Inc()
}

// flush waits for every result.
func (o *outlet) flush(ctx context.Context) error {
	if o.pub == nil {
		return nil
	}
	if err := o.pub.Flush(ctx); err != nil {
		return fmt.Errorf("%w: %w", errBus, err)
	}
	return nil
}
