package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// state is ingest's memory between runs: the start time, export progress
// per date and chunk, the search cursor and per-session progress. It lives
// in the JetStream KV bucket; with dry-run it lives only in this process,
// so a dry run changes nothing. Writes happen only after the PubAcks of
// everything they cover.
type state struct {
	kv     jetstream.KeyValue // nil: in-memory only (dry run)
	bucket string
	// guard, when set, saves the stream marks before any position they
	// cover (nil: no marks, as in a dry run).
	guard *guard

	mu      sync.Mutex
	entries map[string][]byte
}

// newState loads every entry of the bucket (nil kv: an empty in-memory
// state).
func newState(ctx context.Context, kv jetstream.KeyValue, bucket string) (*state, error) {
	s := &state{kv: kv, bucket: bucket, entries: map[string][]byte{}}
	if kv == nil {
		return s, nil
	}
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
			if !ok {
				return s, nil
			}
			if e == nil { // all current values delivered
				return s, nil
			}
			s.entries[e.Key()] = e.Value()
		}
	}
}

// get decodes the entry at key into v and reports whether it exists.
func (s *state) get(key string, v any) (bool, error) {
	s.mu.Lock()
	raw, ok := s.entries[key]
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("state bucket %q key %q: %w", s.bucket, key, err)
	}
	return true, nil
}

// put stores v at key, in the bucket and in memory. A position is saved
// only after the stream marks that cover it.
func (s *state) put(ctx context.Context, key string, v any) error {
	if s.guard != nil && !isMarkKey(key) {
		if err := s.guard.persist(ctx); err != nil {
			return err
		}
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode state %q: %w", key, err)
	}
	if s.kv != nil {
		if _, err := s.kv.Put(ctx, key, raw); err != nil {
			return fmt.Errorf("%w: save state %q in bucket %q: %w", errBus, key, s.bucket, err)
		}
	}
	s.mu.Lock()
	s.entries[key] = raw
	s.mu.Unlock()
	return nil
}

// purge removes key from the bucket (history included) and from memory.
func (s *state) purge(ctx context.Context, key string) error {
	if s.kv != nil {
		if err := s.kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%w: remove state %q from bucket %q: %w", errBus, key, s.bucket, err)
		}
	}
	s.mu.Lock()
	delete(s.entries, key)
	s.mu.Unlock()
	return nil
}

// forgetDeleted drops the bucket's delete markers older than the KV
// library's default threshold (30 minutes), so purged keys leave nothing
// behind for good.
func (s *state) forgetDeleted(ctx context.Context) error {
	if s.kv == nil {
		return nil
	}
	if err := s.kv.PurgeDeletes(ctx); err != nil {
		return fmt.Errorf("%w: drop delete markers from bucket %q: %w", errBus, s.bucket, err)
	}
	return nil
}

// keys returns the keys starting with prefix.
func (s *state) keys(prefix string) []string {
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

// Values stored in the bucket. JSON, so `nats kv get` shows them readably.
type (
	// startState is the start time fixed by the first run.
	startState struct {
		StartTime time.Time `json:"start_time"`
	}
	// chunkState is one export chunk's progress.
	chunkState struct {
		Chunk  string `json:"chunk"`
		Cursor string `json:"cursor,omitempty"`
		Done   bool   `json:"done,omitempty"`
		Events int64  `json:"events,omitempty"`
		// Floor: the events after Cursor that are on the bus are stored
		// after this audit stream sequence (see tracker). Saved before
		// the chunk's first publish; nil in state from older versions.
		Floor *uint64 `json:"floor,omitempty"`
	}
	// dateState marks a date whose chunks are all exported and which is
	// past the straggler window: it is not listed again.
	dateState struct {
		Closed bool  `json:"closed"`
		Chunks int   `json:"chunks"`
		Events int64 `json:"events"`
	}
	// searchState is the position of the search-paging path: the window
	// start, the page key and the id of the last event handled in it.
	searchState struct {
		WindowStart time.Time `json:"window_start"`
		Cursor      string    `json:"cursor,omitempty"`
		LastID      string    `json:"last_id,omitempty"`
		// Floor: as chunkState's, for the events after this position.
		Floor *uint64 `json:"floor,omitempty"`
	}
	// sessionState is one recording's progress: the next index to
	// publish, and when the job started or ended.
	sessionState struct {
		SessionID string    `json:"sid"`
		Next      int64     `json:"next"`
		Uploaded  time.Time `json:"uploaded"`
		FirstSeen time.Time `json:"first_seen"`
		Done      bool      `json:"done,omitempty"`
		GaveUp    bool      `json:"gave_up,omitempty"`
		Reason    string    `json:"reason,omitempty"`
		Events    int64     `json:"events,omitempty"`
		// Finished is when the job ended (done or given up).
		Finished time.Time `json:"finished,omitzero"`
		// Floor: as chunkState's, in the session stream, for the events
		// from Next on.
		Floor *uint64 `json:"floor,omitempty"`
	}
)

// ErrStartTimeChanged is wrapped by the error Run returns when start-time
// differs from the one the first run stored.
var ErrStartTimeChanged = errors.New("start-time differs from the stored one")

// fixStartTime returns the start time: the stored one, or (first run) the
// configured one, or now, which it then stores; fromNow reports the last
// case. A configured value that differs from the stored one is an error
// naming both and what to do: `ingest backfill` moves the start-time
// earlier.
func (s *state) fixStartTime(ctx context.Context, configured time.Time, now time.Time) (start time.Time, fromNow bool, err error) {
	var st startState
	ok, err := s.get(keyStartTime, &st)
	if err != nil {
		return time.Time{}, false, err
	}
	if ok {
		if !configured.IsZero() && !configured.Equal(st.StartTime) {
			return time.Time{}, false, s.startTimeChanged(configured.UTC(), st.StartTime.UTC())
		}
		return st.StartTime, false, nil
	}
	start = configured
	if start.IsZero() {
		start, fromNow = now, true
	}
	start = start.UTC()
	if err := s.put(ctx, keyStartTime, startState{StartTime: start}); err != nil {
		return time.Time{}, false, err
	}
	return start, fromNow, nil
}

// startTimeChanged is the error for a configured start-time that differs
// from the stored one: an earlier one is moved to with `ingest backfill`,
// a later one needs the state reset.
func (s *state) startTimeChanged(configured, stored time.Time) error {
	c, st := configured.Format(time.RFC3339), stored.Format(time.RFC3339)
	reset := fmt.Sprintf("keep the stored value (remove start-time), or reset ingest state to export again from the new time "+
		"(delete the bucket, e.g. `nats kv del %s`, or the storage directory with the embedded server)", s.bucket)
	if configured.Before(stored) {
		return fmt.Errorf("%w: start-time is %s but the first run stored %s in bucket %q (key %q); "+
			"to read the events from %s on as well, stop ingest and run `ingest backfill --start-time %s` once "+
			"(events already on the bus are not published again); or %s",
			ErrStartTimeChanged, c, st, s.bucket, keyStartTime, c, c, reset)
	}
	return fmt.Errorf("%w: start-time is %s but the first run stored %s in bucket %q (key %q); "+
		"a later start-time would unread what is read: %s; an earlier one is moved to with `ingest backfill --start-time <time>`",
		ErrStartTimeChanged, c, st, s.bucket, keyStartTime, reset)
}
