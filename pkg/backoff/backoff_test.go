package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelayDoublesAndCaps(t *testing.T) {
	p := Policy{Base: time.Second, Max: 10 * time.Second}
	for n, want := range map[uint64]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 50: 10 * time.Second} {
		if got := p.Delay(n); got != want {
			t.Errorf("Delay(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestJitterTakesOffUpToItsShare(t *testing.T) {
	p := Policy{Base: time.Second, Max: 4 * time.Second, Jitter: 0.2}
	for n, hi := range map[uint64]time.Duration{1: time.Second, 3: 4 * time.Second, 9: 4 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := p.Delay(n)
			if lo := hi * 8 / 10; d < lo || d > hi {
				t.Fatalf("Delay(%d) = %s; want within [%s, %s]", n, d, lo, hi)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Fatalf("Delay(%d): no jitter in 50 draws", n)
		}
	}
}

func TestBackoffCountsAndResets(t *testing.T) {
	b := Backoff{Policy: Policy{Base: 100 * time.Millisecond, Max: time.Second, Jitter: 0.5}}
	for i, hi := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		d := b.Next()
		hi *= time.Millisecond
		if d < hi/2 || d > hi {
			t.Errorf("delay %d = %s; want within [%s, %s]", i+1, d, hi/2, hi)
		}
	}
	if b.Attempt() != 6 {
		t.Errorf("Attempt() = %d after 6 delays", b.Attempt())
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Errorf("first delay after Reset: %s", d)
	}
}

func TestReconnectPolicy(t *testing.T) {
	if d := Reconnect.Delay(1); d < 250*time.Millisecond || d > 500*time.Millisecond {
		t.Errorf("first reconnect delay %s; want within [250ms, 500ms]", d)
	}
	if d := Reconnect.Delay(100); d < 15*time.Second || d > 30*time.Second {
		t.Errorf("capped reconnect delay %s; want within [15s, 30s]", d)
	}
}

func TestSleepEndsWithTheContext(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on an ended context: %v; want context.Canceled", err)
	}
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep(0) on an ended context: %v; want context.Canceled", err)
	}
	if err := Sleep(context.Background(), -time.Second); err != nil {
		t.Fatalf("Sleep(-1s): %v", err)
	}
	var b Backoff
	if err := b.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on an ended context: %v", err)
	}
}
