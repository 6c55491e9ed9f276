package ingest

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// lossEvery is how often the streams' first sequences are compared with
// their durable consumers' ack floors.
const lossEvery = 5 * time.Second

// lossWatcher counts the messages a stream limit removed before a durable
// consumer acknowledged them. max-age removes messages whatever their
// consumers did (discard new only protects them from max-bytes), so an
// event older than max-age that a consumer has not acknowledged — a sink
// down for longer than that — is gone for that consumer. The watcher sees
// it as the stream's first sequence moving past the consumer's ack floor,
// logs it and counts it in removed_unacknowledged_total{stream,consumer}.
// It polls, so a message acknowledged in the last seconds before its
// removal may be counted too, and a new leader counts a gap again that
// the server has not closed yet (nats-server moves a consumer's ack floor
// past removed messages within a minute or two): it errs on the side of
// reporting.
type lossWatcher struct {
	streams   []string
	stream    func(ctx context.Context, name string) (*jetstream.StreamInfo, error)
	consumers func(ctx context.Context, stream string) (*bus.ConsumerList, error)
	m         *metrics
	log       zerolog.Logger

	counted map[string]uint64 // stream/consumer → highest sequence counted
}

// run polls every lossEvery until ctx ends.
func (w *lossWatcher) run(ctx context.Context) error {
	t := time.NewTicker(lossEvery)
	defer t.Stop()
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poll counts, for every durable consumer of the streams, the sequences
// below the stream's first one that are above the consumer's ack floor and
// not counted before. A stream or consumer that cannot be read now is
// looked at next time.
func (w *lossWatcher) poll(ctx context.Context) {
	if w.counted == nil {
		w.counted = map[string]uint64{}
	}
	for _, name := range w.streams {
		info, err := w.stream(ctx, name)
		if err != nil {
			w.log.Debug().Err(err).Str("stream", name).Msg("stream not read for the retention check")
			continue
		}
		first := info.State.FirstSeq
		if first <= 1 {
			continue
		}
		cs, err := w.consumers(ctx, name)
		if err != nil {
			w.log.Debug().Err(err).Str("stream", name).Msg("consumers not read for the retention check")
			continue
		}
		// A consumer that does not answer now is counted when it does:
		// counted starts from its ack floor.
		for _, c := range cs.Infos {
			if c.Config.Durable == "" {
				continue
			}
			key := name + "/" + c.Name
			from := max(c.AckFloor.Stream, w.counted[key])
			if first-1 <= from {
				continue
			}
			n := first - 1 - from
			w.counted[key] = first - 1
			w.m.removedUnacked.WithLabelValues(name, c.Name).Add(float64(n))
			w.log.Error().Str("stream", name).Str("consumer", c.Name).Uint64("removed", n).
				Uint64("from_seq", from+1).Uint64("to_seq", first-1).Dur("max_age", info.Config.MaxAge).
				Msg("messages removed by the stream's limits before the consumer acknowledged them: that consumer never gets these events (raise [nats] max-age, or keep the consumer running)")
		}
	}
}
