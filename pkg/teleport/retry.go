package teleport

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff computes exponential retry delays with full jitter. The zero
// value is usable: it starts at 500 ms and caps at 30 s.
type Backoff struct {
	// Min is the first delay's upper bound (default 500 ms).
	Min time.Duration
	// Max caps every delay (default 30 s).
	Max time.Duration

	attempt int
}

// Next returns the delay before the next attempt and counts the attempt.
// The delay is drawn uniformly from [d/2, d] where d doubles per attempt,
// so a crowd of clients does not reconnect in lockstep.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	d := lo
	for i := 0; i < b.attempt && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	b.attempt++
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// Attempt is how many delays Next has handed out since the last Reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts the sequence again after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Wait sleeps for Next() or until ctx is done, whichever is first, and
// returns ctx.Err() in the latter case.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
