package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
)

// leaderlessKV is a state bucket whose writes and reads time out while
// down is set, as they do while its stream has no leader (NATS electing
// one after a node loss); it counts the calls that failed and, after
// down, the writes that landed.
type leaderlessKV struct {
	jetstream.KeyValue
	down            atomic.Bool
	failed, written atomic.Int64
}

var errNoLeader = nats.ErrTimeout

func (k *leaderlessKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if k.down.Load() {
		k.failed.Add(1)
		return 0, errNoLeader
	}
	return k.KeyValue.Create(ctx, key, value, opts...)
}

func (k *leaderlessKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if k.down.Load() {
		k.failed.Add(1)
		return 0, errNoLeader
	}
	r, err := k.KeyValue.Update(ctx, key, value, rev)
	if err == nil {
		k.written.Add(1)
	}
	return r, err
}

func (k *leaderlessKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if k.down.Load() {
		k.failed.Add(1)
		return nil, errNoLeader
	}
	return k.KeyValue.Get(ctx, key)
}

// testBucket is a fresh state bucket on an embedded server.
func testBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	b, err := bus.Open(ctx, config.NATSConfig{Listen: "127.0.0.1:0"}, t.TempDir(), "lease-test", zerolog.Nop(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	kv, err := b.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestLeaseHeldWhileBucketHasNoLeader: while the state bucket answers
// nothing for several TTLs (a leader election after a node loss), the
// holder keeps the lease and says so, pauses publishing once its last
// renewal is two thirds of a TTL old, and resumes when a renewal lands; a
// standby polling all along does not take over, because it never saw the
// entry unchanged for a TTL in polls that reached the bucket.
func TestLeaseHeldWhileBucketHasNoLeader(t *testing.T) {
	t.Parallel()
	kv := &leaderlessKV{KeyValue: testBucket(t)}
	const ttl = 600 * time.Millisecond
	logs := &logtest.Buffer{}
	holder := newLease(kv, ttl, zerolog.New(logs))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := holder.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	kept := make(chan error, 1)
	go func() { kept <- holder.keep(ctx) }()
	standby := newLease(kv, ttl, zerolog.Nop())
	standby.holder += "-standby"
	took := make(chan error, 1)
	go func() { took <- standby.acquire(ctx) }()

	kv.down.Store(true)
	// The bucket has been down for more than five TTLs, the holder and the
	// standby failing to reach it all along.
	if !until(nil, 30*time.Second, func() bool { return kv.failed.Load() >= 8 && holder.sinceRenewal() > 5*ttl }) {
		t.Fatalf("no failed renewals over five TTLs:\n%s", logs)
	}
	select {
	case err := <-kept:
		t.Fatalf("the holder gave the lease up while the bucket had no leader: %v\n%s", err, logs)
	case err := <-took:
		t.Fatalf("the standby took the lease while the bucket had no leader (%v)", err)
	default:
	}
	if !strings.Contains(logs.String(), "state bucket has no leader or cannot be reached; holding the lease, renewing again in 1s") {
		t.Errorf("the holder did not say it holds the lease:\n%s", logs)
	}
	if strings.Contains(logs.String(), errLeaseLost.Error()) {
		t.Errorf("the holder logged a lost lease:\n%s", logs)
	}
	gctx, gcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := holder.gate(gctx)
	gcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("gate let a publish through with the lease last renewed %s ago (TTL %s): %v", holder.sinceRenewal(), ttl, err)
	}
	if !strings.Contains(logs.String(), "publishing paused") {
		t.Errorf("the pause was not logged:\n%s", logs)
	}

	kv.down.Store(false)
	gctx, gcancel = context.WithTimeout(ctx, 30*time.Second)
	err = holder.gate(gctx)
	gcancel()
	if err != nil {
		t.Fatalf("gate still closed once the bucket answers again: %v\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "publishing resumed") {
		t.Errorf("the resume was not logged:\n%s", logs)
	}
	// The standby polls a working bucket for more than a TTL while the
	// holder renews: it stays a standby.
	written := kv.written.Load()
	if !until(nil, 30*time.Second, func() bool { return kv.written.Load() >= written+8 }) {
		t.Fatalf("no renewals after the bucket came back:\n%s", logs)
	}
	select {
	case err := <-took:
		t.Fatalf("the standby took the lease from a holder renewing it (%v)", err)
	case err := <-kept:
		t.Fatalf("keep returned %v", err)
	default:
	}
	e, err := kv.Get(ctx, keyLease)
	if err != nil {
		t.Fatal(err)
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil || v.Holder != holder.holder {
		t.Fatalf("the lease names %q (%v), want the holder %q", v.Holder, err, holder.holder)
	}
}

// TestLeaseLostOnlyToAnotherHolder: a renewal whose revision check fails
// is a lost lease only when the entry names another process. When it names
// this one (a renewal landed but its answer was lost), the holder takes
// that revision and goes on.
func TestLeaseLostOnlyToAnotherHolder(t *testing.T) {
	t.Parallel()
	kv := testBucket(t)
	const ttl = 600 * time.Millisecond
	logs := &logtest.Buffer{}
	l := newLease(kv, ttl, zerolog.New(logs))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := l.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	// Our own write, the answer of which never came.
	val, err := l.value()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, keyLease, val, l.rev); err != nil {
		t.Fatal(err)
	}
	if err := l.renew(ctx); err != nil {
		t.Fatalf("renewal after our own unanswered write: %v", err)
	}

	other, err := json.Marshal(leaseValue{Holder: "other-host/1/x", Expires: time.Now().Add(ttl), TTL: ttl.String()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, keyLease, other); err != nil {
		t.Fatal(err)
	}
	err = l.renew(ctx)
	if !errors.Is(err, errLeaseLost) || !strings.Contains(err.Error(), `"other-host/1/x"`) {
		t.Fatalf("renewal over another holder's entry: %v; want errLeaseLost naming it", err)
	}
}
