package reader

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
)

// TestBusRetriesStayShort: failures to reach NATS in a row (a leader
// election, a reconnect) are retried within BusRetryMax however many there
// were, so a wait grown during the election does not outlast it; a full
// stream and Teleport's errors keep the growing backoff.
func TestBusRetriesStayShort(t *testing.T) {
	natsDown := fmt.Errorf("%w: save state: %w", position.ErrBus, nats.ErrTimeout)
	full := fmt.Errorf("%w: publish: %w", position.ErrBus, &jetstream.APIError{ErrorCode: 10023, Description: "insufficient resources"})
	teleport := errors.New("teleport: unavailable")
	for _, c := range []struct {
		err    error
		capped bool
	}{{natsDown, true}, {full, false}, {teleport, false}} {
		b := backoff.Backoff{Policy: backoff.Reconnect}
		var last time.Duration
		for range 10 {
			last = RetryDelay(&b, c.err)
		}
		if c.capped && last > BusRetryMax {
			t.Errorf("%v: the 10th retry waits %s; want at most %s", c.err, last, BusRetryMax)
		}
		if !c.capped && last <= BusRetryMax {
			t.Errorf("%v: the 10th retry waits %s; want the growing backoff (over %s)", c.err, last, BusRetryMax)
		}
	}
}
