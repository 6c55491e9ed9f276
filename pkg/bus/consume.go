package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// What another program needs to read the bus (a SIEM feed, an archiver, a
// lock watcher): Open (or Connect and jetstream.New) with the same [nats]
// section, Consumer for a durable pull consumer on the audit or session
// stream with a filter such as "audit.user.login" or "audit.session.>",
// then Consume or Fetch, ParseMsg for the event and its headers, and Ack
// each message once it is safely handled. The body is Teleport's JSON,
// unchanged. See ExampleBus_Consumer.

// Consumer creates, or brings to these settings, the durable pull consumer
// durable on stream, with explicit acks, delivering the whole stream from
// the start: filter selects subjects (all when empty), ackWait is how long a
// message may stay unacknowledged before redelivery, maxAckPending bounds
// messages handed out and not yet acknowledged (and so memory), maxDeliver
// bounds deliveries of one message (0 = unlimited). Zero ackWait or
// maxAckPending take the server's defaults (30 s, 1000).
//
// An existing consumer of the same name that is a push consumer or does
// not use explicit acks is an error naming it; its other settings are
// updated and the change logged.
func (b *Bus) Consumer(ctx context.Context, stream, durable string, filter []string, ackWait time.Duration, maxAckPending, maxDeliver int) (jetstream.Consumer, error) {
	if durable == "" {
		return nil, fmt.Errorf("consumer on stream %q: no durable name", stream)
	}
	if maxDeliver <= 0 {
		maxDeliver = -1
	}
	c, err := b.JS.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cfg := jetstream.ConsumerConfig{
			Durable:       durable,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       ackWait,
			MaxAckPending: maxAckPending,
			MaxDeliver:    maxDeliver,
		}
		setFilter(&cfg, filter)
		c, err = b.JS.CreateConsumer(ctx, stream, cfg)
		if err != nil {
			return nil, fmt.Errorf("create consumer %q on stream %q: %w", durable, stream, err)
		}
		b.log.Info().Str("stream", stream).Str("consumer", durable).Strs("filter", filter).Msg("consumer created")
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up consumer %q on stream %q: %w", durable, stream, err)
	}
	have := c.CachedInfo().Config
	if have.DeliverSubject != "" {
		return nil, fmt.Errorf("consumer %q on stream %q is a push consumer (deliver subject %q); the bus needs a pull consumer: delete it or choose another name",
			durable, stream, have.DeliverSubject)
	}
	if have.AckPolicy != jetstream.AckExplicitPolicy {
		return nil, fmt.Errorf("consumer %q on stream %q acks with policy %s; the bus needs explicit acks: delete it or choose another name",
			durable, stream, have.AckPolicy)
	}
	upd := have
	if ackWait > 0 {
		upd.AckWait = ackWait
	}
	if maxAckPending > 0 {
		upd.MaxAckPending = maxAckPending
	}
	upd.MaxDeliver = maxDeliver
	setFilter(&upd, filter)
	changes := consumerChanges(have, upd)
	if len(changes) == 0 {
		return c, nil
	}
	c, err = b.JS.UpdateConsumer(ctx, stream, upd)
	if err != nil {
		return nil, fmt.Errorf("consumer %q on stream %q exists with other settings and JetStream refused the change (%s): %w",
			durable, stream, strings.Join(changes, "; "), err)
	}
	b.log.Info().Str("stream", stream).Str("consumer", durable).Strs("changes", changes).Msg("consumer settings updated")
	return c, nil
}

func setFilter(cfg *jetstream.ConsumerConfig, filter []string) {
	cfg.FilterSubject, cfg.FilterSubjects = "", nil
	switch len(filter) {
	case 0:
	case 1:
		cfg.FilterSubject = filter[0]
	default:
		cfg.FilterSubjects = slices.Clone(filter)
	}
}

func filters(c jetstream.ConsumerConfig) []string {
	if c.FilterSubject != "" {
		return []string{c.FilterSubject}
	}
	return c.FilterSubjects
}

func consumerChanges(have, want jetstream.ConsumerConfig) []string {
	var out []string
	if have.AckWait != want.AckWait {
		out = append(out, fmt.Sprintf("ack wait %s → %s", have.AckWait, want.AckWait))
	}
	if have.MaxAckPending != want.MaxAckPending {
		out = append(out, fmt.Sprintf("max ack pending %d → %d", have.MaxAckPending, want.MaxAckPending))
	}
	if have.MaxDeliver != want.MaxDeliver {
		out = append(out, fmt.Sprintf("max deliver %d → %d", have.MaxDeliver, want.MaxDeliver))
	}
	if hf, wf := filters(have), filters(want); !slices.Equal(hf, wf) {
		out = append(out, fmt.Sprintf("filter [%s] → [%s]", strings.Join(hf, ", "), strings.Join(wf, ", ")))
	}
	return out
}
