package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// maxConflicts bounds the compare-and-set retries of one update; each
// conflict means another writer made progress, so running out means heavy
// contention, reported as an error and retried through a redelivery.
const maxConflicts = 50

// counters reads and writes counters in the state bucket. Every write is a
// compare-and-set on the key's revision, so two watchers (or two ingest
// processes) updating one user's counter never lose each other's failures.
type counters struct {
	kv  jetstream.KeyValue
	log zerolog.Logger
}

// update applies change to the counter stored under key and writes the
// result back, re-reading and re-applying on a conflicting write. change
// reports whether it changed anything; nothing is written when it did
// not. change must be safe to run more than once.
func (s counters) update(ctx context.Context, key string, change func(*counter) bool) (counter, error) {
	for range maxConflicts {
		c, rev, err := s.get(ctx, key)
		if err != nil {
			return counter{}, err
		}
		if !change(&c) {
			return c, nil
		}
		data, err := json.Marshal(c)
		if err != nil {
			return counter{}, fmt.Errorf("encode lock counter %q: %w", key, err)
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, data)
		} else {
			_, err = s.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return counter{}, fmt.Errorf("write lock counter %q: %w", key, err)
		}
	}
	return counter{}, fmt.Errorf("write lock counter %q: still conflicting after %d attempts", key, maxConflicts)
}

// get reads the counter under key; a missing key is an empty counter with
// revision 0.
func (s counters) get(ctx context.Context, key string) (counter, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return counter{}, 0, nil
	}
	if err != nil {
		return counter{}, 0, fmt.Errorf("read lock counter %q: %w", key, err)
	}
	var c counter
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		// A value this package cannot read is started afresh rather
		// than blocking the user's counter forever.
		s.log.Error().Err(err).Str("key", key).Str("value", truncate(e.Value(), 80)).
			Msg("lock counter unreadable; counting starts again for this user and login")
		return counter{}, e.Revision(), nil
	}
	return c, e.Revision(), nil
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
