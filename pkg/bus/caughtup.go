package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// CaughtUpKey is the state bucket key where ingest says it has caught up
// and stopped reading (exit-on-last-event). Its value is a CaughtUp. Ingest
// deletes it whenever it starts reading, so a value from an earlier run is
// never taken as current.
const CaughtUpKey = "caught-up"

// CaughtUp is the value at CaughtUpKey: when ingest caught up, and the last
// sequence of each of its streams once every publish of the run was
// acknowledged. A consumer that has delivered up to those sequences has
// every event ingest read.
type CaughtUp struct {
	Time time.Time `json:"time"`
	// Streams maps the audit and session streams' names to their last
	// sequence (0 for an empty stream).
	Streams map[string]uint64 `json:"streams"`
}

// MarkCaughtUp records in kv (the state bucket) that everything published
// so far is on the audit and session streams, with their last sequences.
// Call it only after every publish is acknowledged.
func (b *Bus) MarkCaughtUp(ctx context.Context, kv jetstream.KeyValue) (CaughtUp, error) {
	cu := CaughtUp{Time: time.Now().UTC(), Streams: map[string]uint64{}}
	for _, name := range []string{b.Cfg.AuditStream, b.Cfg.SessionStream} {
		info, err := b.StreamInfo(ctx, name)
		if err != nil {
			return cu, fmt.Errorf("record that ingest is caught up: %w", err)
		}
		cu.Streams[name] = info.State.LastSeq
	}
	data, err := json.Marshal(cu)
	if err != nil {
		return cu, fmt.Errorf("record that ingest is caught up: %w", err)
	}
	if _, err := kv.Put(ctx, CaughtUpKey, data); err != nil {
		return cu, fmt.Errorf("record that ingest is caught up (key %q): %w", CaughtUpKey, err)
	}
	return cu, nil
}

// ClearCaughtUp deletes CaughtUpKey: ingest is reading again.
func ClearCaughtUp(ctx context.Context, kv jetstream.KeyValue) error {
	if err := kv.Delete(ctx, CaughtUpKey); err != nil {
		return fmt.Errorf("clear key %q in the state bucket: %w", CaughtUpKey, err)
	}
	return nil
}

// ParseCaughtUp decodes a CaughtUpKey value.
func ParseCaughtUp(data []byte) (*CaughtUp, error) {
	var cu CaughtUp
	if err := json.Unmarshal(data, &cu); err != nil {
		return nil, fmt.Errorf("key %q: %w", CaughtUpKey, err)
	}
	if cu.Streams == nil {
		return nil, fmt.Errorf("key %q: no stream sequences", CaughtUpKey)
	}
	return &cu, nil
}

// CaughtUpReader reads CaughtUpKey for a consumer of the bus (the sink's
// exit-on-last-event) with as little access as it can: binding the bucket
// once ($JS.API.STREAM.INFO.KV_<bucket>), then one direct get of the one
// key per Read ($JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.caught-up). It
// never watches the bucket nor reads another key.
type CaughtUpReader struct {
	JS     jetstream.JetStream
	Bucket string

	mu sync.Mutex
	kv jetstream.KeyValue
}

// Read returns the current value, or nil when ingest has not said it is
// caught up (no bucket yet, no key, or the key deleted).
func (r *CaughtUpReader) Read(ctx context.Context) (*CaughtUp, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kv == nil {
		kv, err := r.JS.KeyValue(ctx, r.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("open state bucket %q: %w", r.Bucket, err)
		}
		r.kv = kv
	}
	e, err := r.kv.Get(ctx, CaughtUpKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read key %q of state bucket %q: %w", CaughtUpKey, r.Bucket, err)
	}
	if e.Operation() != jetstream.KeyValuePut {
		return nil, nil
	}
	cu, err := ParseCaughtUp(e.Value())
	if err != nil {
		return nil, fmt.Errorf("state bucket %q: %w", r.Bucket, err)
	}
	return cu, nil
}
