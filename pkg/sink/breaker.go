package sink

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
)

// DefaultProbes spaces the probes of an open Breaker: a quarter of a second
// after the first failure, doubling up to two seconds, so the backlog flows
// again at most about two seconds after Fluentd returns.
var DefaultProbes = backoff.Policy{Base: 250 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.2}

// ErrStillOpen is Breaker.Turn's answer when its wait ran out with the
// breaker still open: the caller may keep its messages alive and ask again.
var ErrStillOpen = errors.New("fluentd still refuses events")

// breakerLogEvery is how often a breaker that keeps opening and closing
// (a Fluentd failing one request in a few) writes its lines; in between,
// its openings are counted and logged at debug level.
const breakerLogEvery = 30 * time.Second

// Breaker is the sink's circuit breaker in front of Fluentd. While Fluentd
// refuses every event alike (it is down, refuses connections, fails the TLS
// handshake, answers 5xx, or never acknowledges an in_forward message), the
// breaker is open: senders hold their batches (the Deliverer keeps them
// alive) instead of handing each message back to JetStream with a delay
// of its own, and the intake stops pulling and hands back at once what the
// client had buffered (fetch, batchQueue; Opened and Closed tell them).
// One sender at a time is let through as a probe, its batch being the
// probe, on the schedule of the probes policy (never more than its Max
// apart). The first answer from Fluentd closes it: every waiting sender
// goes at once and pulling resumes, so the backlog flows as soon as
// Fluentd is back, instead of after the longest delay any message was
// given.
//
// A refusal of the records (a 4xx about them) is an answer: Fluentd is up.
// It closes the breaker and stays the business of the message (see
// Deliverer). Errors that say nothing about Fluentd (an event that cannot
// be encoded) are not reported to the breaker at all.
//
// Use it as: probe, err := b.Turn(ctx, wait); send; b.Report(probe, cause)
// (or b.Abandon(probe) when the send was cut short by ctx). A nil *Breaker
// never opens. Its methods are safe for concurrent use.
type Breaker struct {
	probes backoff.Policy
	log    zerolog.Logger
	gauge  prometheus.Gauge

	// isOpen mirrors open for Open, read for every message pulled.
	isOpen atomic.Bool

	mu   sync.Mutex
	open bool
	// opened is closed while the breaker is open, closed while it is
	// closed; each is replaced when the state leaves it.
	opened, closed chan struct{}
	since          time.Time // when it opened
	probing        bool      // a probe is in flight
	failures       uint64    // failed probes since it opened
	next           time.Time // when the next probe may go
	changed        chan struct{}
	// The lines of an opening are written when the last written opening
	// is breakerLogEvery old; quiet counts the openings in between.
	logged   bool
	lastLine time.Time
	quiet    int
	// lastCause is the shape of the refusal last logged.
	lastCause string
}

// NewBreaker returns a closed Breaker that probes on the probes schedule,
// logs its openings and closings to log and sets gauge to 1 while open
// (gauge may be nil).
func NewBreaker(probes backoff.Policy, log zerolog.Logger, gauge prometheus.Gauge) *Breaker {
	b := &Breaker{probes: probes, log: log, gauge: gauge, changed: make(chan struct{}), opened: make(chan struct{}), closed: make(chan struct{})}
	close(b.closed)
	return b
}

// Open reports whether Fluentd is taken to refuse events now.
func (b *Breaker) Open() bool { return b != nil && b.isOpen.Load() }

// Opened returns a channel that is closed once the breaker is open (at
// once if it is open now); a nil Breaker's never is.
func (b *Breaker) Opened() <-chan struct{} {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opened
}

// Closed returns a channel that is closed once the breaker is closed (at
// once if it is closed now).
func (b *Breaker) Closed() <-chan struct{} {
	if b == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Turn waits until the caller may send: at once while the breaker is
// closed (probe false); while it is open, until a probe is due and none is
// in flight (probe true: the caller's send is the probe, and it must
// Report or Abandon it), or until the breaker closes. It returns
// ErrStillOpen when wait (if positive) passes first, and ctx's error when
// ctx ends first.
func (b *Breaker) Turn(ctx context.Context, wait time.Duration) (probe bool, err error) {
	if b == nil {
		return false, ctx.Err()
	}
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		b.mu.Lock()
		if !b.open {
			b.mu.Unlock()
			return false, ctx.Err()
		}
		now := time.Now()
		if !b.probing && !now.Before(b.next) {
			b.probing = true
			b.mu.Unlock()
			return true, ctx.Err()
		}
		changed := b.changed
		var due *time.Timer
		if !b.probing {
			due = time.NewTimer(b.next.Sub(now))
		}
		b.mu.Unlock()
		if err := b.wait(ctx, deadline, changed, due); err != nil {
			return false, err
		}
	}
}

// wait returns when changed is closed or due fires (nil), or with ctx's
// error or ErrStillOpen; it stops due.
func (b *Breaker) wait(ctx context.Context, deadline <-chan time.Time, changed <-chan struct{}, due *time.Timer) error {
	var dueC <-chan time.Time
	if due != nil {
		defer due.Stop()
		dueC = due.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-deadline:
		return ErrStillOpen
	case <-changed:
	case <-dueC:
	}
	return nil
}

// Report records the outcome of a send Turn allowed: cause nil for any
// answer from Fluentd (a 2xx, an ack, a refusal of the records), else the
// error that shows Fluentd refusing events. A success closes the breaker;
// a failure opens it, or, for a probe, schedules the next one later.
func (b *Breaker) Report(probe bool, cause error) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	now := time.Now()
	switch {
	case cause == nil && b.open:
		b.markClosed(now)
	case cause == nil:
		return
	case !b.open:
		b.failures = 0
		b.next = now.Add(b.probes.Delay(1))
		b.markOpen(now, cause)
	case probe:
		b.failures++
		b.next = now.Add(b.probes.Delay(b.failures + 1))
		if shape(cause.Error()) != b.lastCause {
			// Another kind of refusal than the one logged (a reset
			// connection first, the TLS alert naming our certificate
			// next): say it, once per kind.
			b.lastCause = shape(cause.Error())
			b.log.Warn().Err(cause).Msg("fluentd still refuses events, now for another reason")
		}
	default:
		// A request that was already on its way when the breaker opened.
		return
	}
	b.broadcast()
}

// Abandon gives the probe slot back after a send that got no outcome
// (cut short by the caller's context).
func (b *Breaker) Abandon(probe bool) {
	if b == nil || !probe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	b.broadcast()
}

func (b *Breaker) markOpen(now time.Time, cause error) {
	b.open, b.since = true, now
	b.isOpen.Store(true)
	close(b.opened)
	b.closed = make(chan struct{})
	if b.gauge != nil {
		b.gauge.Set(1)
	}
	b.logged = b.lastLine.IsZero() || now.Sub(b.lastLine) >= breakerLogEvery
	if !b.logged {
		b.quiet++
		b.log.Debug().Err(cause).Msg("fluentd refuses events again; pausing delivery")
		return
	}
	ev := b.log.Warn()
	if b.quiet > 0 {
		ev = ev.Int("openings_since_last_line", b.quiet)
	}
	ev.Str("probe_every_at_most", b.probes.Max.String()).
		Msgf("fluentd refuses events: %v; pausing delivery, probing every %s to %s", cause, b.probes.Base, b.probes.Max)
	b.lastLine, b.quiet = now, 0
	b.lastCause = shape(cause.Error())
}

// shape is an error's text without its digits (ports, addresses, sizes),
// so that two refusals of one kind compare equal.
func shape(msg string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, msg)
}

func (b *Breaker) markClosed(now time.Time) {
	b.open = false
	b.isOpen.Store(false)
	close(b.closed)
	b.opened = make(chan struct{})
	if b.gauge != nil {
		b.gauge.Set(0)
	}
	ev := b.log.Debug()
	if b.logged {
		ev = b.log.Info()
	}
	ev.Str("paused_for", now.Sub(b.since).Round(time.Millisecond).String()).Uint64("failed_probes", b.failures).
		Msg("fluentd accepts events again; delivery resumed")
}

// broadcast wakes every Turn waiting for a change.
func (b *Breaker) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}
