package position

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Store is ingest's memory between runs: the start time, the readers'
// positions, the stream marks and the lease, in the JetStream KV bucket.
// Every entry is read once when the Store opens and kept in memory; a
// write goes to the bucket before it counts. A Store opened without a
// bucket (Memory) lives only in this process, so a dry run changes
// nothing. Writes of positions happen only after the PubAcks of
// everything they cover (see Tracker).
type Store struct {
	kv     jetstream.KeyValue // nil: in memory only (dry run)
	bucket string
	// beforeSave runs before every write that is not a stream mark (see
	// BeforeSave).
	beforeSave func(context.Context) error

	mu      sync.Mutex
	entries map[string][]byte
}

// Open loads every entry of the bucket.
func Open(ctx context.Context, kv jetstream.KeyValue, bucket string) (*Store, error) {
	s := &Store{kv: kv, bucket: bucket, entries: map[string][]byte{}}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read state bucket %q: %w", bucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read state bucket %q: %w", bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok || e == nil { // nil: all current values delivered
				return s, nil
			}
			s.entries[e.Key()] = e.Value()
		}
	}
}

// Memory is an empty Store without a bucket: what it is given is kept in
// this process only.
func Memory() *Store {
	return &Store{entries: map[string][]byte{}}
}

// Bucket names the state bucket ("" for a Store in memory).
func (s *Store) Bucket() string { return s.bucket }

// BeforeSave sets f to run before every write except that of a stream mark:
// the run's guard saves the marks that cover a position before it (and
// refuses the write when a stream was lost). Set it before the readers
// start.
func (s *Store) BeforeSave(f func(context.Context) error) { s.beforeSave = f }

// Get decodes the entry at key into v and reports whether it exists.
func (s *Store) Get(key string, v any) (bool, error) {
	raw, ok := s.Raw(key)
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("state bucket %q key %q: %w", s.bucket, key, err)
	}
	return true, nil
}

// Raw is the entry at key as stored.
func (s *Store) Raw(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw, ok := s.entries[key]
	return raw, ok
}

// Put stores v at key, in the bucket and in memory.
func (s *Store) Put(ctx context.Context, key string, v any) error {
	if s.beforeSave != nil && !isMarkKey(key) {
		if err := s.beforeSave(ctx); err != nil {
			return err
		}
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode state %q: %w", key, err)
	}
	if s.kv != nil {
		if _, err := s.kv.Put(ctx, key, raw); err != nil {
			return fmt.Errorf("%w: save state %q in bucket %q: %w", ErrBus, key, s.bucket, err)
		}
	}
	s.mu.Lock()
	s.entries[key] = raw
	s.mu.Unlock()
	return nil
}

// Purge removes key from the bucket (history included) and from memory.
func (s *Store) Purge(ctx context.Context, key string) error {
	if s.kv != nil {
		if err := s.kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%w: remove state %q from bucket %q: %w", ErrBus, key, s.bucket, err)
		}
	}
	s.mu.Lock()
	delete(s.entries, key)
	s.mu.Unlock()
	return nil
}

// ForgetDeleted drops the bucket's delete markers older than the KV
// library's default threshold (30 minutes), so purged keys leave nothing
// behind for good.
func (s *Store) ForgetDeleted(ctx context.Context) error {
	if s.kv == nil {
		return nil
	}
	if err := s.kv.PurgeDeletes(ctx); err != nil {
		return fmt.Errorf("%w: drop delete markers from bucket %q: %w", ErrBus, s.bucket, err)
	}
	return nil
}

// Keys returns the keys starting with prefix, in no particular order.
func (s *Store) Keys(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.entries {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// isMarkKey reports whether key holds a stream mark.
func isMarkKey(key string) bool {
	return strings.HasPrefix(key, PrefixMark)
}
