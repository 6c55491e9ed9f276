package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
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

// CaughtUpSubject is the one JetStream API subject a reader of
// CaughtUpKey needs: a direct get of the key's last value from the state
// bucket's stream. The sink's NATS user is allowed exactly this.
func CaughtUpSubject(bucket string) string {
	return "$JS.API.DIRECT.GET.KV_" + bucket + ".$KV." + bucket + "." + CaughtUpKey
}

// CaughtUpReader reads CaughtUpKey for a consumer of the bus (the sink's
// exit-on-last-event) with as little access as there is: one direct get
// request per Read on CaughtUpSubject, answered by any server holding the
// bucket (the state bucket allows direct gets). It never binds or watches
// the bucket, nor reads another key.
type CaughtUpReader struct {
	NC     *nats.Conn
	Bucket string
}

// Read returns the current value, or nil when ingest has not said it is
// caught up (no bucket yet, no key, or the key deleted).
func (r *CaughtUpReader) Read(ctx context.Context) (*CaughtUp, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := r.NC.RequestWithContext(ctx, CaughtUpSubject(r.Bucket), nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, nil // no bucket (ingest has not run yet)
	}
	if err != nil {
		return nil, fmt.Errorf("read key %q of state bucket %q: %w", CaughtUpKey, r.Bucket, err)
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
	case "404":
		return nil, nil
	default:
		return nil, fmt.Errorf("read key %q of state bucket %q: JetStream answered %s %s", CaughtUpKey, r.Bucket, status, msg.Header.Get("Description"))
	}
	if msg.Header.Get("KV-Operation") != "" || msg.Header.Get(jetstream.MarkerReasonHeader) != "" {
		return nil, nil // deleted or purged
	}
	cu, err := ParseCaughtUp(msg.Data)
	if err != nil {
		return nil, fmt.Errorf("state bucket %q: %w", r.Bucket, err)
	}
	return cu, nil
}
