package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// Source is one stream the sink reads: its name, the durable consumer's
// name and the subject filters that apply to it.
type Source struct {
	Stream   string
	Consumer string
	Filters  []string
	// Session marks the session recordings stream (events go to the
	// per-session URL).
	Session bool
}

// Sources picks the streams to read from cfg. With no filter subjects both
// streams are read in full; with filters, each stream is read only through
// the filters that fall inside it (audit.… or session.…), and a stream no
// filter selects is not read. The session stream is skipped when no
// session-url is set.
func Sources(cfg *config.Config) ([]Source, error) {
	nc := bus.WithDefaults(cfg.NATS)
	all := []Source{
		{Stream: nc.AuditStream, Consumer: cfg.Sink.AuditConsumer},
		{Stream: nc.SessionStream, Consumer: cfg.Sink.SessionConsumer, Session: true},
	}
	prefixes := []string{bus.AuditPrefix, bus.SessionPrefix}
	var out []Source
	for i, src := range all {
		if src.Consumer == "" {
			return nil, fmt.Errorf("sink: empty consumer name for stream %q", src.Stream)
		}
		if src.Session && cfg.Fluentd.SessionURL == "" {
			continue
		}
		filters, selected := filtersFor(cfg.Sink.FilterSubjects, prefixes[i])
		if !selected {
			continue
		}
		src.Filters = filters
		out = append(out, src)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("sink.filter-subjects %q select neither %s.> nor %s.> (with a session-url)",
			cfg.Sink.FilterSubjects, bus.AuditPrefix, bus.SessionPrefix)
	}
	return out, nil
}

// filtersFor returns the filters of subjects that fall inside the stream of
// prefix, and whether the stream is read at all. No subjects, ">" or
// "<prefix>.>" select the whole stream (no filter).
func filtersFor(subjects []string, prefix string) (filters []string, selected bool) {
	if len(subjects) == 0 {
		return nil, true
	}
	for _, f := range subjects {
		switch {
		case f == ">" || f == prefix+".>":
			return nil, true
		case strings.HasPrefix(f, prefix+"."):
			filters = append(filters, f)
		}
	}
	return filters, len(filters) > 0
}

// ConsumerConfig is the durable pull consumer the sink shares with every
// other sink process of the same name: explicit acks, the configured ack
// wait and max ack pending. MaxDeliver is left unlimited on purpose: a
// Fluentd outage makes every message fail again and again, and JetStream
// stops redelivering a message after MaxDeliver, which would lose it. The
// sink applies max-deliver itself, to refusals only (see Deliverer).
func ConsumerConfig(src Source, sc config.SinkConfig) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       src.Consumer,
		Description:   "teleport-event-bus fluentd-sink",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       sc.AckWait,
		MaxAckPending: sc.MaxAckPending,
		MaxDeliver:    -1,
	}
	switch len(src.Filters) {
	case 0:
	case 1:
		cc.FilterSubject = src.Filters[0]
	default:
		cc.FilterSubjects = src.Filters
	}
	return cc
}

// OpenConsumer creates the durable consumer of src, or updates it to the
// configuration when it exists. A configuration the server cannot apply to
// the existing consumer (another filter on a consumer other sinks use, for
// instance) is an error naming the consumer and the stream.
func OpenConsumer(ctx context.Context, js jetstream.JetStream, src Source, sc config.SinkConfig) (jetstream.Consumer, error) {
	return openConsumer(ctx, js, src, ConsumerConfig(src, sc))
}

func openConsumer(ctx context.Context, js jetstream.JetStream, src Source, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, src.Stream, cc)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("consumer %q: stream %q does not exist (start ingest first, or check nats.*-stream): %w", src.Consumer, src.Stream, err)
		}
		return nil, fmt.Errorf("create or update consumer %q on stream %q (does its configuration conflict with the existing one?): %w", src.Consumer, src.Stream, err)
	}
	return c, nil
}

// OpenOrdered opens an ephemeral ordered consumer on src, for a dry run: it
// reads everything without acknowledging anything and leaves no state.
func OpenOrdered(ctx context.Context, js jetstream.JetStream, src Source) (jetstream.Consumer, error) {
	c, err := js.OrderedConsumer(ctx, src.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: src.Filters,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("ordered consumer: stream %q does not exist (start ingest first, or check nats.*-stream): %w", src.Stream, err)
		}
		return nil, fmt.Errorf("ordered consumer on stream %q: %w", src.Stream, err)
	}
	return c, nil
}

// fetch pulls messages from c and passes them to emit until ctx is done,
// then drains what the client already buffered so those messages are
// delivered rather than left to time out; once hard is done it stops
// without draining (the rest is redelivered after the ack wait). It returns
// nil on a clean stop, and an error when the consumer is deleted.
//
// While the breaker is open it does not pull: it drains the client's
// buffer, handing each message back to JetStream at once (NAK) instead of
// emitting it, and pulls again, at full speed, as soon as the breaker
// closes. A message thus sits in this sink only while it is being
// delivered or held by the Deliverer (kept alive there), never for longer
// than its ack wait in the client's buffer.
//
// emit runs in the client's delivery goroutine (Consume) rather than in a
// loop of ours over Messages: that iterator arms and stops a heartbeat
// timer for every message, a visible share of the sink's CPU at full
// speed. emit is never called after fetch has returned.
func fetch(ctx, hard context.Context, c jetstream.Consumer, src Source, buffer int, breaker *Breaker, emit func(jetstream.Msg), log zerolog.Logger) error {
	var (
		// gate holds back fetch's return while emit runs, and emit once
		// fetch has returned (the caller takes no items after that).
		gate   sync.Mutex
		closed bool
	)
	defer func() {
		gate.Lock()
		closed = true
		gate.Unlock()
	}()
	handler := func(m jetstream.Msg) {
		if breaker.Open() {
			// Redelivered once the breaker closes and pulling resumes.
			_ = m.Nak()
			return
		}
		gate.Lock()
		defer gate.Unlock()
		if !closed {
			emit(m)
		}
	}
	for {
		paused, err := pull(ctx, hard, c, src, buffer, breaker.Opened(), handler, log)
		if err != nil || !paused {
			return err
		}
		log.Debug().Str("stream", src.Stream).Str("consumer", src.Consumer).Msg("not pulling while fluentd refuses events")
		select {
		case <-ctx.Done():
			return nil
		case <-breaker.Closed():
		}
	}
}

// pauseDrainWait bounds the drain of the client's buffer when the breaker
// opens.
const pauseDrainWait = 5 * time.Second

// pull runs one Consume of c until ctx is done (then it drains, bounded by
// hard), the consumer is deleted, or pause is closed (then it drains, and
// returns paused true).
func pull(ctx, hard context.Context, c jetstream.Consumer, src Source, buffer int, pause <-chan struct{},
	handler func(jetstream.Msg), log zerolog.Logger) (paused bool, err error) {
	deleted := make(chan error, 1)
	onError := func(_ jetstream.ConsumeContext, err error) {
		switch {
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			select {
			case deleted <- err:
			default:
			}
		case errors.Is(err, jetstream.ErrConnectionClosed) || ctx.Err() != nil:
			// The end of the connection or of the sink, not a problem to
			// report.
		default:
			// Heartbeats missed while NATS reconnects and similar: the
			// client recovers by itself.
			log.Warn().Err(err).Str("stream", src.Stream).Str("consumer", src.Consumer).Msg("pulling messages")
		}
	}
	cc, err := c.Consume(handler, jetstream.PullMaxMessages(buffer), jetstream.ConsumeErrHandler(onError))
	if err != nil {
		return false, fmt.Errorf("pull from consumer %q on stream %q: %w", src.Consumer, src.Stream, err)
	}
	defer cc.Stop()
	done := cc.Closed()
	drain := func(giveUp <-chan struct{}) {
		cc.Drain()
		select {
		case <-done:
		case <-giveUp:
		case err = <-deleted:
		}
	}
	select {
	case <-ctx.Done():
		drain(hard.Done())
	case <-pause:
		// Bounded: without NATS the drain cannot end, and what is left in
		// the buffer is redelivered after its ack wait anyway.
		giveUp, cancel := context.WithTimeout(ctx, pauseDrainWait)
		drain(giveUp.Done())
		cancel()
		paused = err == nil
	case err = <-deleted:
	case <-done:
	}
	if err == nil {
		// The client stops by itself after reporting a deleted consumer:
		// done may have been seen first.
		select {
		case err = <-deleted:
			paused = false
		default:
		}
	}
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, fmt.Errorf("%w: %w", &ConsumerDeletedError{Consumer: src.Consumer, Stream: src.Stream}, err)
	}
	if err != nil {
		return false, fmt.Errorf("pull from consumer %q on stream %q: %w", src.Consumer, src.Stream, err)
	}
	return paused, nil
}

// backlog reads the consumer's info: what is pending on the server and
// how far it has delivered.
func backlog(ctx context.Context, c jetstream.Consumer) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.Info(ctx)
}
