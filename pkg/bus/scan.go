package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// scanBatch is how many message headers a scan fetches per request.
const scanBatch = 1000

// ScanMsgIDs calls fn with the Nats-Msg-Id of every message stream holds,
// oldest first, up to its last message when the scan starts; it reads
// headers only, with an ordered consumer, and returns how many messages it
// read. It is how a re-export learns which events are already on the bus
// when they are older than the duplicate window. A stream that does not
// exist is an error wrapping jetstream.ErrStreamNotFound.
func (b *Bus) ScanMsgIDs(ctx context.Context, stream string, fn func(id string)) (int, error) {
	return ScanTail(ctx, b.JS, stream, 0, func(id string, _ uint64) { fn(id) })
}

// ScanTail calls fn with the Nats-Msg-Id and sequence of every message
// stream holds after sequence after, oldest first, up to its last message
// when the scan starts, and returns how many it read. It reads headers only,
// with an ordered consumer, and creates none when the stream holds nothing
// after after. This is how a writer learns which of the messages it may
// have published are on the bus already, whatever the duplicate window: a
// message published once the stream's last sequence was S is stored, if at
// all, after S. A stream that does not exist is an error wrapping
// jetstream.ErrStreamNotFound.
func ScanTail(ctx context.Context, js jetstream.JetStream, stream string, after uint64, fn func(id string, seq uint64)) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("scan stream %q: %w", stream, err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 || st.LastSeq <= after {
		return 0, nil
	}
	cfg := jetstream.OrderedConsumerConfig{HeadersOnly: true}
	if after > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = after + 1
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("scan stream %q: %w", stream, err)
	}
	n := 0
	for {
		batch, err := cons.Fetch(scanBatch, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return n, fmt.Errorf("scan stream %q after %d messages: %w", stream, n, err)
		}
		got := 0
		done := false
		for m := range batch.Messages() {
			got++
			n++
			meta, err := m.Metadata()
			if err != nil {
				return n, fmt.Errorf("scan stream %q: %w", stream, err)
			}
			fn(m.Headers().Get(HeaderMsgID), meta.Sequence.Stream)
			if meta.Sequence.Stream >= st.LastSeq || meta.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && ctx.Err() != nil {
			return n, fmt.Errorf("scan stream %q after %d messages: %w", stream, n, err)
		}
		if done {
			return n, nil
		}
		if got == 0 {
			return n, fmt.Errorf("scan stream %q: read %d messages after sequence %d, then nothing more (its last is %d)", stream, n, after, st.LastSeq)
		}
	}
}
