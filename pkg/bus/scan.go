package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// scanBatch is how many message headers a scan fetches per request.
const scanBatch = 1000

// scanInactive is how long JetStream keeps a scan's consumer once nobody
// pulls from it: the scan deletes its consumer when it ends, and this only
// matters when that delete fails (NATS unreachable, the process killed).
const scanInactive = time.Minute

// scanCleanupTimeout bounds the delete of a scan's consumer.
const scanCleanupTimeout = 5 * time.Second

// ScanMsgIDs calls fn with the Nats-Msg-Id of every message stream holds,
// oldest first, up to its last message when the scan starts; it reads
// headers only, with one consumer of its own (see ScanTail), and returns
// how many messages it read. It is how a re-export learns which events are
// already on the bus when they are older than the duplicate window. A
// stream that does not exist is an error wrapping
// jetstream.ErrStreamNotFound.
func (b *Bus) ScanMsgIDs(ctx context.Context, stream string, fn func(id string)) (int, error) {
	return ScanTail(ctx, b.JS, stream, 0, func(id string, _ uint64) { fn(id) })
}

// ScanTail calls fn with the Nats-Msg-Id and sequence of every message
// stream holds after sequence after, oldest first, up to its last message
// when the scan starts, and returns how many it read. This is how a writer
// learns which of the messages it may have published are on the bus
// already, whatever the duplicate window: a message published once the
// stream's last sequence was S is stored, if at all, after S. A stream
// that does not exist is an error wrapping jetstream.ErrStreamNotFound.
//
// It reads headers only, through one ephemeral consumer (in memory, one
// replica, no acks) that it names, creates when the stream holds anything
// after after, and deletes when it returns, on success and error alike:
// scans leave no consumer behind (scanInactive covers a delete that
// fails, and a create that failed in a leader election yet landed). A
// message the consumer skipped (its consumer sequence jumps) fails the
// scan rather than go unseen. An ordered consumer would do that
// check itself, but replaces its consumer with a new one on every fetch,
// leaving one to delete per thousand messages.
func ScanTail(ctx context.Context, js jetstream.JetStream, stream string, after uint64, fn func(id string, seq uint64)) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("scan stream %q: %w", stream, err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 || st.LastSeq <= after {
		return 0, nil
	}
	cfg := jetstream.ConsumerConfig{
		Name:              nuid.Next(),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: scanInactive,
	}
	if after > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = after + 1
	}
	cons, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		// Not deleted: while NATS elects a leader a delete would wait out
		// its timeout too. A create that landed all the same is removed
		// by its inactive threshold.
		return 0, fmt.Errorf("scan stream %q: %w", stream, err)
	}
	defer deleteScanConsumer(ctx, s, cfg.Name)
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
			if meta.Sequence.Consumer != uint64(n) {
				return n, fmt.Errorf("scan stream %q: message %d of the scan came as number %d (one was not delivered); scan again", stream, n, meta.Sequence.Consumer)
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

// deleteScanConsumer deletes a scan's consumer. A delete that fails is
// left to the consumer's inactive threshold (scanInactive); the scan's
// result stands either way.
func deleteScanConsumer(ctx context.Context, s jetstream.Stream, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scanCleanupTimeout)
	defer cancel()
	_ = s.DeleteConsumer(ctx, name)
}
