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
	s, err := b.JS.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("scan stream %q: %w", stream, err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 {
		return 0, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
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
			fn(m.Headers().Get(HeaderMsgID))
			meta, err := m.Metadata()
			if err != nil {
				return n, fmt.Errorf("scan stream %q: %w", stream, err)
			}
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
			return n, fmt.Errorf("scan stream %q: read %d of %d messages, then nothing more", stream, n, st.Msgs)
		}
	}
}
