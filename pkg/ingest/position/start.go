package position

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrStartTimeChanged is wrapped by the error FixStartTime returns when
// start-time differs from the one the first run stored.
var ErrStartTimeChanged = errors.New("start-time differs from the stored one")

// FixStartTime returns the start time: the stored one, or (first run) the
// configured one, or now, which it then stores; fromNow reports the last
// case. A configured value that differs from the stored one is an error
// naming both and what to do: `ingest backfill` moves the start-time
// earlier.
func (s *Store) FixStartTime(ctx context.Context, configured time.Time, now time.Time) (start time.Time, fromNow bool, err error) {
	var st Start
	ok, err := s.Get(KeyStartTime, &st)
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
	if err := s.Put(ctx, KeyStartTime, Start{StartTime: start}); err != nil {
		return time.Time{}, false, err
	}
	return start, fromNow, nil
}

// startTimeChanged is the error for a configured start-time that differs
// from the stored one: an earlier one is moved to with `ingest backfill`,
// a later one needs the state reset.
func (s *Store) startTimeChanged(configured, stored time.Time) error {
	c, st := configured.Format(time.RFC3339), stored.Format(time.RFC3339)
	reset := fmt.Sprintf("keep the stored value (remove start-time), or reset ingest state to export again from the new time "+
		"(delete the bucket, e.g. `nats kv del %s`, or the storage directory with the embedded server)", s.bucket)
	if configured.Before(stored) {
		return fmt.Errorf("%w: start-time is %s but the first run stored %s in bucket %q (key %q); "+
			"to read the events from %s on as well, stop ingest and run `ingest backfill --start-time %s` once "+
			"(events already on the bus are not published again); or %s",
			ErrStartTimeChanged, c, st, s.bucket, KeyStartTime, c, c, reset)
	}
	return fmt.Errorf("%w: start-time is %s but the first run stored %s in bucket %q (key %q); "+
		"a later start-time would unread what is read: %s; an earlier one is moved to with `ingest backfill --start-time <time>`",
		ErrStartTimeChanged, c, st, s.bucket, KeyStartTime, reset)
}
