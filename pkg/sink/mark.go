package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// markInterval bounds how often a sink records its consumer's ack floor.
const markInterval = 10 * time.Second

// consumerMark is what the sinks record about a durable consumer in the
// state bucket (bus.SinkConsumerKey): the stream it reads (and that
// stream's creation time, to tell a recreated stream), when the consumer
// was created, and the last acknowledged stream sequence they saw. A
// missing consumer with a mark was deleted; without one it was never
// created.
type consumerMark struct {
	Stream        string    `json:"stream"`
	StreamCreated time.Time `json:"stream_created"`
	Created       time.Time `json:"created"`
	AckFloor      uint64    `json:"ack_floor"`
}

// marks reads and writes the consumer marks. The bucket is bound on first
// use: it may not exist yet when a sink starts before ingest.
type marks struct {
	js     jetstream.JetStream
	bucket string

	mu      sync.Mutex
	kv      jetstream.KeyValue
	written map[string]time.Time // consumer → last write
	floor   map[string]uint64    // consumer → last floor written
}

func newMarks(js jetstream.JetStream, bucket string) *marks {
	return &marks{js: js, bucket: bucket, written: map[string]time.Time{}, floor: map[string]uint64{}}
}

// bind returns the bucket, or nil while it does not exist.
func (m *marks) bind(ctx context.Context) (jetstream.KeyValue, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.kv != nil {
		return m.kv, nil
	}
	kv, err := m.js.KeyValue(ctx, m.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state bucket %q: %w", m.bucket, err)
	}
	m.kv = kv
	return kv, nil
}

// read returns the mark of consumer, or nil when there is none.
func (m *marks) read(ctx context.Context, consumer string) (*consumerMark, error) {
	kv, err := m.bind(ctx)
	if err != nil || kv == nil {
		return nil, err
	}
	e, err := kv.Get(ctx, bus.SinkConsumerKey(consumer))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the record of consumer %q (state key %s): %w", consumer, bus.SinkConsumerKey(consumer), err)
	}
	var mk consumerMark
	if err := json.Unmarshal(e.Value(), &mk); err != nil {
		return nil, fmt.Errorf("state key %s: %w", bus.SinkConsumerKey(consumer), err)
	}
	return &mk, nil
}

// write records mk for consumer (nothing while the bucket is missing).
func (m *marks) write(ctx context.Context, consumer string, mk consumerMark) error {
	kv, err := m.bind(ctx)
	if err != nil || kv == nil {
		return err
	}
	data, err := json.Marshal(mk)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, bus.SinkConsumerKey(consumer), data); err != nil {
		return fmt.Errorf("record consumer %q (state key %s; a NATS server whose users predate this key refuses it: give it the users of a current configure run): %w", consumer, bus.SinkConsumerKey(consumer), err)
	}
	m.mu.Lock()
	m.written[consumer], m.floor[consumer] = time.Now(), mk.AckFloor
	m.mu.Unlock()
	return nil
}

// due reports whether a floor is worth writing now: it moved, and the last
// write is markInterval old (or there was none).
func (m *marks) due(consumer string, floor uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	last, ok := m.written[consumer]
	return !ok || (floor != m.floor[consumer] && time.Since(last) >= markInterval)
}

// ConsumerDeletedError is a durable consumer that was deleted after a sink
// created it: the sink stops rather than create it again from the start of
// the stream and deliver everything a second time.
type ConsumerDeletedError struct {
	Consumer, Stream string
	// Mark is the record the sinks kept; nil when the deletion was seen
	// while reading.
	Mark *consumerMark
}

func (e *ConsumerDeletedError) Error() string {
	since := ""
	if e.Mark != nil {
		since = fmt.Sprintf(" (created %s, last acknowledged stream sequence %d)", e.Mark.Created.UTC().Format(time.RFC3339), e.Mark.AckFloor)
	}
	return fmt.Sprintf("consumer %q on stream %q was deleted%s; the sink stops instead of re-delivering the stream from its start: "+
		"to resume after the last acknowledged position, start one sink with --sink-recreate-consumer resume (what was acknowledged in the %s before the record may be delivered again); "+
		"to deliver the whole stream again on purpose, --sink-recreate-consumer all; then run without it (docs/troubleshooting.md, \"Consumer deleted\")",
		e.Consumer, e.Stream, since, markInterval)
}

// openDurable opens src's durable consumer, telling a first start from a
// consumer deleted under the sinks: a missing consumer that the sinks
// recorded (on the same stream, not recreated since) is a
// ConsumerDeletedError unless sink.recreate-consumer says how to recreate
// it. An existing consumer that starts at a sequence (one "resume"
// recreated) keeps it; the rest is brought to the configuration.
func (s *Sink) openDurable(ctx context.Context, src Source) (jetstream.Consumer, error) {
	cc := ConsumerConfig(src, s.sc)
	stream, err := s.js.Stream(ctx, src.Stream)
	if err != nil {
		return openConsumer(ctx, s.js, src, cc) // names the missing stream
	}
	streamCreated := stream.CachedInfo().Created
	have, err := s.js.Consumer(ctx, src.Stream, src.Consumer)
	switch {
	case err == nil:
		return s.keepDurable(ctx, src, have, cc, streamCreated)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		mk, err := s.marks.read(ctx, src.Consumer)
		if err != nil {
			return nil, err
		}
		if mk != nil && mk.Stream == src.Stream && mk.StreamCreated.Equal(streamCreated) {
			// Another sink may have created the consumer, and then the
			// record, since the look-up: the record is written after the
			// consumer, so a consumer missing after it was read is gone.
			if again, err := s.js.Consumer(ctx, src.Stream, src.Consumer); err == nil {
				return s.keepDurable(ctx, src, again, cc, streamCreated)
			}
			switch s.sc.RecreateConsumer {
			case "resume":
				cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, mk.AckFloor+1
			case "all":
			default:
				return nil, &ConsumerDeletedError{Consumer: src.Consumer, Stream: src.Stream, Mark: mk}
			}
			s.log.Warn().Str("stream", src.Stream).Str("consumer", src.Consumer).Str("recreate", s.sc.RecreateConsumer).
				Uint64("from_sequence", max(cc.OptStartSeq, 1)).Msg("recreating the deleted consumer (sink.recreate-consumer)")
		}
	default:
		return openConsumer(ctx, s.js, src, cc)
	}
	return s.createDurable(ctx, src, cc, streamCreated)
}

// keepDurable brings an existing consumer to the configuration. One
// recreated by "resume" starts at a sequence and keeps it; any other start
// than the configuration's is still a conflict, named by openConsumer.
func (s *Sink) keepDurable(ctx context.Context, src Source, have jetstream.Consumer, cc jetstream.ConsumerConfig, streamCreated time.Time) (jetstream.Consumer, error) {
	if hc := have.CachedInfo().Config; hc.DeliverPolicy == jetstream.DeliverByStartSequencePolicy {
		cc.DeliverPolicy, cc.OptStartSeq = hc.DeliverPolicy, hc.OptStartSeq
	}
	return s.createDurable(ctx, src, cc, streamCreated)
}

// createDurable creates or updates the consumer and records it.
func (s *Sink) createDurable(ctx context.Context, src Source, cc jetstream.ConsumerConfig, streamCreated time.Time) (jetstream.Consumer, error) {
	c, err := openConsumer(ctx, s.js, src, cc)
	if err != nil {
		return nil, err
	}
	info := c.CachedInfo()
	mk := consumerMark{Stream: src.Stream, StreamCreated: streamCreated, Created: info.Created, AckFloor: info.AckFloor.Stream}
	if err := s.marks.write(ctx, src.Consumer, mk); err != nil {
		// Without the record a later deletion looks like a first start:
		// stop rather than run unprotected.
		return nil, err
	}
	return c, nil
}

// recordFloor records the consumer's ack floor (from info) in its mark.
// A failure is logged: the record is retried at the next reading.
func (s *Sink) recordFloor(ctx context.Context, src Source, info *jetstream.ConsumerInfo) {
	stream, err := s.js.Stream(ctx, src.Stream)
	if err == nil {
		err = s.marks.write(ctx, src.Consumer, consumerMark{
			Stream: src.Stream, StreamCreated: stream.CachedInfo().Created, Created: info.Created, AckFloor: info.AckFloor.Stream,
		})
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn().Err(err).Str("consumer", src.Consumer).Msg("recording the consumer's acknowledged position")
	}
}
