package sink

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
)

// Sender posts records to a URL; *fluentd.Client is the real one. Send
// returns nil only for a 2xx; a refusal is an error fluentd.Refused
// recognises; every other error is retried.
type Sender interface {
	Send(ctx context.Context, url string, records []json.RawMessage) (fluentd.Result, error)
}

// DefaultBackoff spaces the redeliveries of a message Fluentd refused (a
// 4xx, before it is dead-lettered) or that could not be sent for a reason
// of its own: one second, doubling up to 30 seconds; the jitter keeps
// sinks from coming back together. An outage of Fluentd does not use it:
// the Breaker holds the messages and probes instead.
var DefaultBackoff = backoff.Policy{Base: time.Second, Max: 30 * time.Second, Jitter: 0.2}

// Deliverer sends batches and settles their messages with JetStream
// according to Fluentd's answer:
//   - 2xx (an ack for in_forward): every message is acknowledged;
//   - 5xx, timeout, connection or TLS error, no ack: Fluentd refuses
//     events, whichever they are. The Breaker opens, and the batch is held
//     (kept alive with in-progress acks, so JetStream does not redeliver
//     it and its delivery count does not grow) and sent again when the
//     breaker lets it through, as a probe or once Fluentd answers again;
//   - 4xx for several records: the batch is split in halves and each half
//     sent again, until the refused records are isolated;
//   - 4xx for one record: NAKed with a Backoff delay, or, on its
//     MaxDeliver-th delivery, published to the dead-letter subject and
//     terminated. An outage never dead-letters an event: only a refusal
//     leads there, and held batches keep their delivery count;
//   - an error that is not about Fluentd (an event that cannot be
//     encoded): NAKed with a Backoff delay.
type Deliverer struct {
	Send        Sender
	DeadLetters DeadLetters
	Backoff     backoff.Policy
	// Breaker pauses delivery while Fluentd refuses events. Without one, a
	// batch Fluentd failed is handed back to JetStream with Backoff delays.
	Breaker *Breaker
	// Stopping ends when the sink stops taking messages (SIGTERM). From
	// then on a batch is no longer held for a Fluentd that refuses events:
	// it is handed back at once, for another sink (or this one, restarted)
	// to deliver, so a stop does not wait out the shutdown timeout for an
	// answer that is not coming. Nil: held until ctx ends.
	Stopping context.Context
	// MaxDeliver is how many deliveries a refused record gets before it is
	// dead-lettered (1 dead-letters on the first refusal).
	MaxDeliver int
	// AckWait is the consumer's; acks of messages held for more than half of
	// it are confirmed (double ack) so a late one is noticed, and held
	// messages are marked in progress three times per AckWait.
	AckWait time.Duration
	Metrics *Metrics
	Log     zerolog.Logger
	// Settled(n) is called as n messages are acked, NAKed or terminated.
	Settled func(n int)

	failures failureLog
}

// Failing reports whether Fluentd is taken to refuse events now (the
// breaker is open).
func (d *Deliverer) Failing() bool { return d.Breaker.Open() }

// Deliver sends b and settles every message in it. ctx bounds the requests
// and the holding; once it is done the remaining messages are NAKed at once
// for another sink (or this one, restarted) to deliver.
func (d *Deliverer) Deliver(ctx context.Context, b *Batch) {
	d.send(ctx, b.URL, b.Items)
}

func (d *Deliverer) send(ctx context.Context, url string, items []Item) {
	kept := oldest(items)
	for {
		probe, err := d.turn(ctx, items, &kept)
		if err != nil {
			d.release(items)
			return
		}
		start := time.Now()
		res, err := d.Send.Send(ctx, url, records(items))
		d.Metrics.observeRequest(len(items), res.Status, time.Since(start))
		switch {
		case err == nil:
			d.Breaker.Report(probe, nil)
			d.ack(ctx, items)
			return
		case fluentd.Refused(err):
			d.Breaker.Report(probe, nil)
			if len(items) == 1 {
				d.refused(ctx, items[0], res, err)
				return
			}
			mid := len(items) / 2
			d.Log.Debug().Err(err).Int("records", len(items)).Msg("array refused, splitting it to find the refused records")
			d.send(ctx, url, items[:mid])
			d.send(ctx, url, items[mid:])
			return
		case ctx.Err() != nil:
			d.Breaker.Abandon(probe)
			d.release(items)
			return
		case fluentd.Retryable(err) && d.Breaker != nil:
			// Held: the loop sends the same items again when the breaker
			// lets them through.
			d.Breaker.Report(probe, err)
			d.Metrics.Retried.Add(float64(len(items)))
		default:
			d.Breaker.Abandon(probe)
			d.retry(items, err)
			return
		}
	}
}

// turn waits for the breaker to let items through. While it is open, the
// items are marked in progress whenever keepAlive passed since *kept (when
// they were received or last marked), so that JetStream keeps them
// assigned to this sink, however many probes they take part in. Once the
// sink stops (Stopping) with the breaker open, it gives up the batch
// (errStopped): send hands it back.
func (d *Deliverer) turn(ctx context.Context, items []Item, kept *time.Time) (probe bool, err error) {
	keepAlive := d.AckWait / 3
	if keepAlive <= 0 {
		keepAlive = 10 * time.Second
	}
	for {
		stopped := d.stopped()
		if stopped && d.Breaker.Open() {
			return false, errStopped
		}
		if d.Breaker.Open() && time.Since(*kept) >= keepAlive {
			d.keepAlive(items)
			*kept = time.Now()
		}
		wait := max(time.Until(kept.Add(keepAlive)), time.Millisecond)
		hold, done := ctx, func() {}
		if stopped {
			// The breaker is closed: send now, and should it open
			// meanwhile, hand the batch back soon.
			wait = min(wait, stoppedRecheck)
		} else if d.Stopping != nil {
			var cancel context.CancelFunc
			hold, cancel = context.WithCancel(ctx)
			stop := context.AfterFunc(d.Stopping, cancel)
			done = func() { stop(); cancel() }
		}
		probe, err := d.Breaker.Turn(hold, wait)
		done()
		if err != nil && probe {
			d.Breaker.Abandon(probe)
			probe = false
		}
		if err != nil && ctx.Err() == nil && d.stopped() {
			continue // the stop woke the wait: decide again
		}
		if !errors.Is(err, ErrStillOpen) {
			return probe, err
		}
	}
}

// errStopped ends the holding of a batch once the sink stops while Fluentd
// refuses events (Deliverer.Stopping).
var errStopped = errors.New("the sink stops while fluentd refuses events")

// stoppedRecheck bounds a wait for the breaker once the sink stops.
const stoppedRecheck = 100 * time.Millisecond

// stopped reports whether the sink has stopped taking messages.
func (d *Deliverer) stopped() bool { return d.Stopping != nil && d.Stopping.Err() != nil }

// keepAlive marks held items in progress.
func (d *Deliverer) keepAlive(items []Item) {
	for _, it := range items {
		if err := it.Msg.InProgress(); err != nil {
			// JetStream redelivers it after its ack wait: a duplicate at
			// worst, as the held copy is still sent.
			d.Log.Debug().Err(err).Str("subject", it.Msg.Subject()).Msg("marking a held event in progress failed")
		}
	}
}

// oldest is when the earliest of items was received.
func oldest(items []Item) time.Time {
	t := time.Now()
	for _, it := range items {
		if !it.Received.IsZero() && it.Received.Before(t) {
			t = it.Received
		}
	}
	return t
}

// ack acknowledges items. A message held for most of its ack wait may
// already have been redelivered to another sink, so its ack is confirmed by
// the server instead of fired and forgotten.
func (d *Deliverer) ack(ctx context.Context, items []Item) {
	late := time.Now().Add(-d.AckWait / 2)
	// The delivered counter is added to once per run of items from one
	// stream (a whole batch, in practice) rather than once per event: the
	// labelled lookup costs more than the ack itself.
	var stream string
	acked := 0
	for _, it := range items {
		var err error
		if d.AckWait > 0 && it.Received.Before(late) {
			err = it.Msg.DoubleAck(ctx)
		} else {
			err = it.Msg.Ack()
		}
		if err != nil {
			d.Log.Warn().Err(err).Str("subject", it.Msg.Subject()).Msg("ack after delivery failed; JetStream will redeliver the event (a duplicate in Fluentd)")
			continue
		}
		if it.Stream != stream {
			d.countDelivered(stream, acked)
			stream, acked = it.Stream, 0
		}
		acked++
	}
	d.countDelivered(stream, acked)
	d.Settled(len(items))
}

func (d *Deliverer) countDelivered(stream string, n int) {
	if n > 0 {
		d.Metrics.Delivered.WithLabelValues(stream).Add(float64(n))
	}
}

// retry hands items back to JetStream for redelivery after a backoff that
// grows with each delivery: for errors that are not Fluentd's (it is not
// told about them, so they do not pause delivery).
func (d *Deliverer) retry(items []Item, cause error) {
	var delay time.Duration
	var most uint64
	for _, it := range items {
		n := deliveries(it.Msg)
		most = max(most, n)
		delay = d.Backoff.Delay(n)
		if err := it.Msg.NakWithDelay(delay); err != nil {
			d.Log.Warn().Err(err).Str("subject", it.Msg.Subject()).Msg("nak failed; JetStream redelivers the event after its ack wait")
		}
	}
	d.Metrics.Retried.Add(float64(len(items)))
	d.failures.failed(d.Log, cause, len(items), most, delay)
	d.Settled(len(items))
}

// release NAKs items without delay: the sink is stopping and another sink
// can take them now.
func (d *Deliverer) release(items []Item) {
	for _, it := range items {
		_ = it.Msg.Nak()
	}
	d.Settled(len(items))
}

// refused handles one record Fluentd refused: retried until its
// MaxDeliver-th delivery, then dead-lettered and terminated.
func (d *Deliverer) refused(ctx context.Context, it Item, res fluentd.Result, cause error) {
	defer d.Settled(1)
	n := deliveries(it.Msg)
	log := d.Log.With().Str("subject", it.Msg.Subject()).Int("status", res.Status).Str("answer", res.Answer).Uint64("delivery", n).Logger()
	if n < uint64(max(d.MaxDeliver, 1)) {
		delay := d.Backoff.Delay(n)
		if err := it.Msg.NakWithDelay(delay); err != nil {
			log.Warn().Err(err).Msg("nak failed; JetStream redelivers the event after its ack wait")
		}
		d.Metrics.Retried.Inc()
		log.Warn().Str("retry_in", delay.Round(time.Millisecond).String()).Int("max_deliver", d.MaxDeliver).Msg("fluentd refused an event; retrying it later")
		return
	}
	reason := res.Answer
	if reason == "" {
		reason = cause.Error()
	}
	if err := d.DeadLetters.Publish(ctx, it.Msg, res, reason); err != nil {
		// Keep the event: try again after a backoff rather than drop it.
		delay := d.Backoff.Delay(n)
		_ = it.Msg.NakWithDelay(delay)
		log.Error().Err(err).Str("retry_in", delay.Round(time.Millisecond).String()).Msg("could not dead-letter a refused event; it stays in the stream")
		return
	}
	if err := it.Msg.TermWithReason("fluentd refused it; moved to dead letters"); err != nil {
		log.Warn().Err(err).Msg("terminate dead-lettered event failed; it may be dead-lettered again (deduplicated)")
	}
	d.Metrics.DeadLettered.Inc()
	log.Error().Msg("fluentd refused an event on every delivery; moved it to the dead-letter subject")
}

// failureLog keeps an outage from flooding the log: it writes a line when
// the retries reach a new backoff step (a higher delivery count) and
// otherwise at most every failureLogEvery, each line with the counts since
// the previous one.
type failureLog struct {
	mu       sync.Mutex
	step     uint64
	last     time.Time
	requests int
	events   int
}

// failureLogEvery is the longest silence while Fluentd keeps failing.
const failureLogEvery = 30 * time.Second

func (f *failureLog) failed(log zerolog.Logger, cause error, events int, delivery uint64, delay time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	f.events += events
	if delivery <= f.step && time.Since(f.last) < failureLogEvery {
		return
	}
	log.Warn().Err(cause).Int("failed_requests", f.requests).Int("events", f.events).Uint64("delivery", delivery).
		Str("retry_in", delay.Round(time.Millisecond).String()).
		Msg("sending to fluentd failed; events handed back to JetStream, retrying with backoff")
	f.step = max(f.step, delivery)
	f.last = time.Now()
	f.requests, f.events = 0, 0
}

// deliveries is how many times JetStream has delivered msg (1 the first
// time).
func deliveries(msg jetstream.Msg) uint64 {
	md, err := msg.Metadata()
	if err != nil || md.NumDelivered == 0 {
		return 1
	}
	return md.NumDelivered
}
