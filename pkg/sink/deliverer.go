package sink

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
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

// DefaultBackoff spaces redeliveries after a retryable failure: one second,
// doubling up to 30 seconds, so a recovered Fluentd gets the backlog again
// within half a minute; the jitter keeps sinks retrying after an outage from
// arriving at Fluentd together.
var DefaultBackoff = backoff.Policy{Base: time.Second, Max: 30 * time.Second, Jitter: 0.2}

// Deliverer sends batches and settles their messages with JetStream
// according to Fluentd's answer:
//   - 2xx: every message is acknowledged;
//   - 5xx, timeout, connection error: every message is NAKed with a backoff
//     delay, so JetStream redelivers it later (nothing is lost, however long
//     Fluentd is down);
//   - 4xx for several records: the batch is split in halves and each half
//     sent again, until the refused records are isolated;
//   - 4xx for one record: NAKed with a delay, or, on its MaxDeliver-th
//     delivery, published to the dead-letter subject and terminated.
type Deliverer struct {
	Send        Sender
	DeadLetters DeadLetters
	Backoff     backoff.Policy
	// MaxDeliver is how many deliveries a refused record gets before it is
	// dead-lettered (1 dead-letters on the first refusal).
	MaxDeliver int
	// AckWait is the consumer's; acks of messages held for more than half of
	// it are confirmed (double ack) so a late one is noticed.
	AckWait time.Duration
	Metrics *Metrics
	Log     zerolog.Logger
	// Settled(n) is called as n messages are acked, NAKed or terminated.
	Settled func(n int)

	failing  atomic.Bool
	failures failureLog
}

// Failing reports whether the last request failed: neither a 2xx nor a
// refusal of the records came back.
func (d *Deliverer) Failing() bool { return d.failing.Load() }

// Deliver sends b and settles every message in it. ctx bounds the requests;
// once it is done the remaining messages are NAKed at once for another sink
// (or this one, restarted) to deliver.
func (d *Deliverer) Deliver(ctx context.Context, b *Batch) {
	d.send(ctx, b.URL, b.Items)
}

func (d *Deliverer) send(ctx context.Context, url string, items []Item) {
	if ctx.Err() != nil {
		d.release(items)
		return
	}
	start := time.Now()
	res, err := d.Send.Send(ctx, url, records(items))
	d.Metrics.observeRequest(len(items), res.Status, time.Since(start))
	switch {
	case err == nil:
		if d.failing.Swap(false) {
			d.failures.recovered(d.Log)
		}
		d.ack(ctx, items)
	case fluentd.Refused(err) && len(items) > 1:
		d.failing.Store(false)
		mid := len(items) / 2
		d.Log.Debug().Err(err).Int("records", len(items)).Msg("array refused, splitting it to find the refused records")
		d.send(ctx, url, items[:mid])
		d.send(ctx, url, items[mid:])
	case fluentd.Refused(err):
		d.failing.Store(false)
		d.refused(ctx, items[0], res, err)
	case ctx.Err() != nil:
		d.release(items)
	default:
		d.failing.Store(true)
		d.retry(items, err)
	}
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
// grows with each delivery.
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
		Msg("fluentd delivery failed; events handed back to JetStream, retrying with backoff")
	f.step = max(f.step, delivery)
	f.last = time.Now()
	f.requests, f.events = 0, 0
}

func (f *failureLog) recovered(log zerolog.Logger) {
	f.mu.Lock()
	defer f.mu.Unlock()
	log.Info().Int("failed_requests_since_last_line", f.requests).Msg("fluentd accepts events again")
	f.step, f.last, f.requests, f.events = 0, time.Time{}, 0, 0
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
