package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// scanBatch is how many message headers a scan fetches per request.
const scanBatch = 1000

// ScanMsgIDs calls fn with the Nats-Msg-Id of every message stream holds,
// oldest first, up to its last message when the scan starts; it reads
// headers only, through a scan consumer (see ScanTail), and returns how
// many messages it read. It is how a re-export learns which events are already on the bus
// when they are older than the duplicate window. A stream that does not
// exist is an error wrapping jetstream.ErrStreamNotFound.
func (b *Bus) ScanMsgIDs(ctx context.Context, stream string, fn func(id string)) (int, error) {
	return ScanTail(ctx, b.JS, stream, 0, func(id string, _ uint64) { fn(id) })
}

// ScanTail calls fn with the Nats-Msg-Id and sequence of every message
// stream holds after sequence after, oldest first, up to its last message
// when the scan starts, and returns how many it read. It reads headers only,
// through a consumer named after a free scan slot (ScanConsumerName), which
// it deletes when it returns, and creates none when the stream holds nothing
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
	cons, err := createScanConsumer(ctx, js, stream, after)
	if err != nil {
		return 0, fmt.Errorf("scan stream %q: %w", stream, err)
	}
	defer deleteScanConsumer(js, stream, cons)
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
			// A plain consumer, unlike an ordered one, does not restart
			// itself after a lost message: a gap fails the scan.
			if meta.Sequence.Consumer != uint64(n) {
				return n, fmt.Errorf("scan stream %q: message %d arrived as the consumer's %d (a delivery was lost): scan again", stream, n, meta.Sequence.Consumer)
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

// scanConsumerTTL is how long a scan consumer outlives a crashed scan: the
// server deletes it after this long without a pull, freeing its slot.
const scanConsumerTTL = 30 * time.Second

// scanSlotWait bounds the wait for a free scan slot when every one is
// taken (by other scans, or by the leftovers of a crashed process).
const scanSlotWait = 2 * scanConsumerTTL

// createScanConsumer creates a headers-only consumer from sequence after+1
// under the first free scan name. Each scan's configuration is its own (a
// unique description), so a name another scan holds is refused as
// existing rather than shared.
func createScanConsumer(ctx context.Context, js jetstream.JetStream, stream string, after uint64) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Description:       "ingest scan " + nuid.Next(),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: scanConsumerTTL,
	}
	if after > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = after + 1
	}
	deadline := time.Now().Add(scanSlotWait)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for i := 1; i <= ScanConsumerSlots; i++ {
			cfg.Name = ScanConsumerName(i)
			cons, err := js.CreateConsumer(ctx, stream, cfg)
			if err == nil {
				return cons, nil
			}
			if !errors.Is(err, jetstream.ErrConsumerExists) {
				return nil, fmt.Errorf("create scan consumer %s: %w", cfg.Name, err)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("all %d scan consumer names (%s1 … %s%d) are in use for %s", ScanConsumerSlots, ScanConsumerPrefix, ScanConsumerPrefix, ScanConsumerSlots, scanSlotWait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// deleteScanConsumer deletes a finished scan's consumer, with a context of
// its own so a cancelled scan still frees its slot; a failed delete is
// left to the consumer's inactivity threshold.
func deleteScanConsumer(js jetstream.JetStream, stream string, cons jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = js.DeleteConsumer(ctx, stream, cons.CachedInfo().Name)
}
