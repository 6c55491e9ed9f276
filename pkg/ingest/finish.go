package ingest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// How often exit-on-last-event looks at the consumers, how often it logs
// while it waits, and how long it lets the other clients of the embedded
// server (the sinks) see that they are done and disconnect.
var (
	finishPoll       = 250 * time.Millisecond
	finishLogEvery   = 15 * time.Second
	finishClientWait = 10 * time.Second
)

// finishConsumerWait is how long exit-on-last-event waits for a durable
// consumer to appear when there is none: a sink started beside ingest may
// still be retrying its connection to the embedded server (its retries
// are up to 15 s apart) when a short export is already done.
var finishConsumerWait = 20 * time.Second

// finish ends an exit-on-last-event run once everything read is
// acknowledged: it records in the state bucket that ingest is caught up
// (bus.CaughtUpKey, which the sink's exit-on-last-event waits for) and,
// with the embedded server, which stops with this process, waits until
// the durable consumers of the audit and session streams have nothing
// pending and nothing unacknowledged, then for the other clients to
// disconnect. A consumer that does not drain within
// ingest.exit-drain-timeout is an error naming it. With no durable consumer
// at all, it waits finishConsumerWait for one to appear (a sink that is
// starting); if none does there is nothing to wait for: the events stay in
// the streams for a consumer started later, a warning says so, and the
// exit is 0.
func finish(ctx context.Context, cfg *config.Config, log zerolog.Logger, b *bus.Bus, kv jetstream.KeyValue) error {
	cu, err := b.MarkCaughtUp(ctx, kv)
	if err != nil {
		return err
	}
	log.Info().Any("streams", cu.Streams).Msg("caught up: recorded in the state bucket (key " + bus.CaughtUpKey + ")")
	if b.Embedded == nil {
		return nil
	}
	timeout := cfg.Ingest.ExitDrainTimeout
	if timeout <= 0 {
		timeout = config.Default().Ingest.ExitDrainTimeout
	}
	deadline := time.Now().Add(timeout)
	if err := waitDrained(ctx, log, b, deadline, timeout); err != nil {
		return err
	}
	waitClientsGone(ctx, log, b, min(finishClientWait, time.Until(deadline)))
	return nil
}

// backlog is one durable consumer's undelivered messages.
type backlog struct {
	stream, consumer    string
	pending, ackPending uint64
	// unknown: the server could not get the consumer's state (its server
	// down or electing a leader).
	unknown bool
}

func (c backlog) String() string {
	if c.unknown {
		return fmt.Sprintf("consumer %q on stream %q did not answer (its NATS server may be down or electing a leader)", c.consumer, c.stream)
	}
	return fmt.Sprintf("consumer %q on stream %q has %d pending and %d unacknowledged", c.consumer, c.stream, c.pending, c.ackPending)
}

// waitDrained polls the durable consumers until none has a backlog.
func waitDrained(ctx context.Context, log zerolog.Logger, b *bus.Bus, deadline time.Time, timeout time.Duration) error {
	t := time.NewTicker(finishPoll)
	defer t.Stop()
	lastLog := time.Now()
	noConsumerUntil := time.Now().Add(finishConsumerWait)
	saidNoConsumer := false
	for {
		durables, behind, err := backlogs(ctx, b)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			log.Warn().Err(err).Msg("reading the consumers' backlog failed; trying again")
		case durables == 0 && time.Now().Before(noConsumerUntil):
			if !saidNoConsumer {
				saidNoConsumer = true
				log.Info().Dur("up_to", finishConsumerWait).Msg("no durable consumer reads the streams yet; waiting for one (a sink that is starting)")
			}
		case durables == 0:
			log.Warn().Strs("streams", []string{b.Cfg.AuditStream, b.Cfg.SessionStream}).
				Msg("exit-on-last-event: no durable consumer reads the streams, so nothing is waited for; the events stay in the streams under storage for a consumer started later")
			return nil
		case len(behind) == 0:
			log.Info().Int("consumers", durables).Msg("every durable consumer has delivered everything")
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("exit-on-last-event: could not read the consumers' backlog for %s (ingest.exit-drain-timeout): %w", timeout, err)
			}
			parts := make([]string, len(behind))
			for i, c := range behind {
				parts[i] = c.String()
			}
			return fmt.Errorf("exit-on-last-event: %s after %s (ingest.exit-drain-timeout); the events stay in the stream for its next run (is its sink running and Fluentd reachable?)",
				strings.Join(parts, "; "), timeout)
		}
		if len(behind) > 0 && time.Since(lastLog) >= finishLogEvery {
			lastLog = time.Now()
			log.Info().Str("waiting_for", behind[0].String()).Int("consumers_behind", len(behind)).
				Time("deadline", deadline).Msg("caught up; waiting for the durable consumers to deliver before exiting")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backlogs counts the durable consumers on the audit and session streams
// and lists those with messages pending or unacknowledged.
func backlogs(ctx context.Context, b *bus.Bus) (durables int, behind []backlog, err error) {
	for _, stream := range []string{b.Cfg.AuditStream, b.Cfg.SessionStream} {
		list, err := b.ConsumerInfos(ctx, stream)
		if err != nil {
			return 0, nil, err
		}
		// A consumer whose state is unknown may be a durable with a
		// backlog: it counts as behind until it answers.
		for name := range list.Unanswered {
			durables++
			behind = append(behind, backlog{stream: stream, consumer: name, unknown: true})
		}
		for _, ci := range list.Infos {
			if ci.Config.Durable == "" {
				continue // ordered and ephemeral consumers vanish with their reader
			}
			durables++
			if ci.NumPending > 0 || ci.NumAckPending > 0 {
				behind = append(behind, backlog{stream: stream, consumer: ci.Name, pending: ci.NumPending, ackPending: uint64(ci.NumAckPending)})
			}
		}
	}
	return durables, behind, nil
}

// waitClientsGone gives the other clients of the embedded server up to
// wait to disconnect: a sink with exit-on-last-event needs one more look
// at its consumers after its last ack to know it is done, and would lose
// its server if this process stopped first.
func waitClientsGone(ctx context.Context, log zerolog.Logger, b *bus.Bus, wait time.Duration) {
	srv := b.Embedded.Server()
	others := func() int { return srv.NumClients() - 1 } // this process's own connection
	if others() <= 0 {
		return
	}
	log.Info().Int("clients", others()).Dur("up_to", wait).Msg("waiting for the other clients of the embedded NATS server to disconnect")
	t := time.NewTicker(finishPoll)
	defer t.Stop()
	stop := time.After(wait)
	for others() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			log.Info().Int("clients", others()).Msg("other clients still connected; stopping the embedded NATS server")
			return
		case <-t.C:
		}
	}
}
