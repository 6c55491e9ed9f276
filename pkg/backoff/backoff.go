// Package backoff spaces retries. Every retry loop in the pipeline takes
// its delays from here: ingest and the lock watcher reconnecting to
// Teleport, ingest and the sink waiting for NATS and JetStream, the sink
// redelivering to Fluentd after a failure. A Policy turns a failure count
// into a delay; a Backoff counts the failures of one loop; Sleep waits
// unless the context ends first.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential delay: Base for the first failure, doubled for
// each one after it and capped at Max. Jitter (a fraction, 0 to 1) takes up
// to that share of the delay off at random, so that clients failing
// together do not come back together; Max still caps every delay.
type Policy struct {
	Base   time.Duration
	Max    time.Duration
	Jitter float64
}

// Reconnect is the policy for reaching a server again: 500 ms growing to
// 30 s, each delay drawn from its upper half.
var Reconnect = Policy{Base: 500 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.5}

// Delay is the wait after the n-th failure in a row (1 for the first).
func (p Policy) Delay(n uint64) time.Duration {
	d := p.Base
	for i := uint64(1); i < n && d < p.Max; i++ {
		d *= 2
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	if p.Jitter > 0 && d > 0 {
		d -= time.Duration(rand.Float64() * min(p.Jitter, 1) * float64(d))
	}
	return max(d, 0)
}

// Backoff counts the failures of one retry loop and hands out its
// Policy's delays in turn.
type Backoff struct {
	Policy  Policy
	attempt uint64
}

// Next counts a failure and returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.attempt++
	return b.Policy.Delay(b.attempt)
}

// Attempt is how many delays Next has handed out since the last Reset.
func (b *Backoff) Attempt() int { return int(b.attempt) }

// Reset starts the sequence again after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Wait sleeps for Next(), or until ctx ends (its error then).
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Sleep waits d, or until ctx ends (its error then). A d of zero or less
// returns at once, with ctx's error if it has ended.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
