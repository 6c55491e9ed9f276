package ingest

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
)

// publisher is the part of *bus.Publisher ingest uses: asynchronous
// publishing with results reported in publish order.
type publisher interface {
	Publish(ctx context.Context, e bus.Event, done bus.PublishDone) error
	Flush(ctx context.Context) error
}

// outlet is the readers' reader.Outlet, the last stage before the bus: it
// trims oversized events, counts, and hands events to the publisher (or,
// in a dry run, logs them and reports success at once).
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
}

// OnBus reports whether e is on the bus already (a recovery re-reads it):
// it is not published again, and counts as handled.
func (o *outlet) OnBus(e bus.Event) bool {
	return o.skip.has(e.MsgID())
}

// Send publishes e; done gets the result (nil error on success). An error
// return means e was not published and done will not be called.
func (o *outlet) Send(ctx context.Context, e bus.Event, done func(error)) error {
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
			done(fmt.Errorf("%w: publish %s to %s: %w", position.ErrBus, fitted.MsgID(), fitted.Subject(), err))
			return
		}
		o.m.pause.published(o.log, streamKind(fitted.Session), ack != nil && ack.Duplicate)
		o.guard.acked(ack)
		o.count(fitted)
		done(nil)
	})
	if err != nil {
		return fmt.Errorf("%w: publish %s: %w", position.ErrBus, fitted.MsgID(), err)
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

// Flush waits for every result.
func (o *outlet) Flush(ctx context.Context) error {
	if o.pub == nil {
		return nil
	}
	if err := o.pub.Flush(ctx); err != nil {
		return fmt.Errorf("%w: %w", position.ErrBus, err)
	}
	return nil
}
