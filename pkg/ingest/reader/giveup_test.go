package reader

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
)

// TestGiveUpPolicy: when a failed try is made again, and when a recording
// is given up.
func TestGiveUpPolicy(t *testing.T) {
	seen := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	notFound := status.Error(codes.NotFound, "session not found")
	busDown := fmt.Errorf("%w: save state: %w", position.ErrBus, nats.ErrTimeout)
	cut := status.Error(codes.Unavailable, "stream cut")
	for _, c := range []struct {
		name     string
		ttl      time.Duration
		j        job
		next     int64 // the saved position's next index
		began    time.Duration
		err      error
		giveUp   bool
		delay    time.Duration
		attempt  int
		missing  bool
		notAfter time.Duration // notBefore, from seen
	}{
		{name: "first miss", ttl: 48 * time.Hour, began: time.Minute, err: notFound, delay: time.Second, attempt: 1, missing: true, notAfter: time.Minute + time.Second},
		{name: "misses in a row grow the delay", ttl: 48 * time.Hour, j: job{attempt: 3}, began: time.Minute, err: notFound, delay: 8 * time.Second, attempt: 4, missing: true, notAfter: time.Minute + 8*time.Second},
		{name: "the delay stops at 5 minutes", ttl: 48 * time.Hour, j: job{attempt: 20}, began: time.Hour, err: notFound, delay: 5 * time.Minute, attempt: 21, missing: true, notAfter: time.Hour + 5*time.Minute},
		{name: "a short TTL keeps several tries", ttl: 2 * time.Second, j: job{attempt: 2}, began: 0, err: notFound, delay: 500 * time.Millisecond, attempt: 3, missing: true, notAfter: 500 * time.Millisecond},
		{name: "the last try is at the TTL", ttl: 10 * time.Second, j: job{attempt: 3}, began: 9 * time.Second, err: notFound, delay: 2500 * time.Millisecond, attempt: 4, missing: true, notAfter: 10 * time.Second},
		{name: "progress starts the backoff over", ttl: 48 * time.Hour, j: job{attempt: 5, next: 10}, next: 40, began: time.Minute, err: cut, delay: time.Second, attempt: 1, notAfter: time.Minute + time.Second},
		{name: "NATS down retries within BusRetryMax", ttl: 48 * time.Hour, j: job{attempt: 6}, began: time.Minute, err: busDown, delay: BusRetryMax, attempt: 7, notAfter: time.Minute + BusRetryMax},
		{name: "a try begun at the TTL gives up", ttl: 10 * time.Second, j: job{attempt: 4}, began: 10 * time.Second, err: notFound, giveUp: true},
		{name: "a try begun before the TTL does not, however late it failed", ttl: 10 * time.Second, j: job{attempt: 4}, began: 9999 * time.Millisecond, err: notFound, delay: 2500 * time.Millisecond, attempt: 5, missing: true, notAfter: 10 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newGiveUp(c.ttl)
			ss := position.Session{FirstSeen: seen, Next: c.next}
			began := seen.Add(c.began)
			j, d, gaveUp := p.after(c.j, ss, began, began, c.err)
			if gaveUp != c.giveUp {
				t.Fatalf("given up %v; want %v", gaveUp, c.giveUp)
			}
			if gaveUp {
				return
			}
			if d != c.delay || j.attempt != c.attempt || j.missing != c.missing || !j.notBefore.Equal(seen.Add(c.notAfter)) {
				t.Errorf("retry in %s (attempt %d, missing %v) at +%s; want %s (attempt %d, missing %v) at +%s",
					d, j.attempt, j.missing, j.notBefore.Sub(seen), c.delay, c.attempt, c.missing, c.notAfter)
			}
			if j.next != c.next {
				t.Errorf("job remembers index %d; want the saved %d", j.next, c.next)
			}
		})
	}
	if p := newGiveUp(0); p.ttl != DefaultMissingTTL {
		t.Errorf("TTL 0 gives %s; want the default %s", p.ttl, DefaultMissingTTL)
	}
}
