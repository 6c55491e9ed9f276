package sink

import (
	"math/rand/v2"
	"time"
)

// Backoff is the delay before a message is redelivered after a retryable
// failure: Base doubled for each earlier delivery, capped at Max, with up to
// ±Jitter of it (a fraction) added at random so that sinks retrying after an
// outage do not arrive at Fluentd together.
type Backoff struct {
	Base   time.Duration
	Max    time.Duration
	Jitter float64
}

// DefaultBackoff starts at one second and stops growing at 30 seconds, so a
// recovered Fluentd gets the backlog again within half a minute.
var DefaultBackoff = Backoff{Base: time.Second, Max: 30 * time.Second, Jitter: 0.2}

// Delay is the wait after the delivery-th failed delivery (1 for the first).
func (b Backoff) Delay(delivery uint64) time.Duration {
	d := b.Base
	for i := uint64(1); i < delivery && d < b.Max; i++ {
		d *= 2
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	if b.Jitter > 0 && d > 0 {
		span := float64(d) * b.Jitter
		d += time.Duration((rand.Float64()*2 - 1) * span)
	}
	return max(d, 0)
}
