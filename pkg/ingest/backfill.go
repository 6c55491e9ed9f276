package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
)

// ErrStartTimeLater is wrapped by the error Backfill returns for a
// start-time later than the stored one: events already read cannot be
// unread.
var ErrStartTimeLater = errors.New("backfill moves the start-time earlier only")

// Backfill is `ingest backfill --start-time <t>`: it moves the start-time
// the first run fixed to the earlier t, so that the next run also reads the
// events from t on that the first run skipped (a first run without
// start-time reads from the moment it started). Nothing is published
// twice: the positions of the dates up to the old start-time's are reset,
// and the next run, like one after `ingest recover`, first learns which
// events the streams hold (by Nats-Msg-Id) and publishes only the others;
// the sinks then deliver only those. Later positions, the session jobs, the
// lock counters and the lease are kept. No ingest may be running: with the
// embedded server it opens the storage directory itself, and with a NATS
// cluster it refuses while an ingest holds the lease. It writes what it
// did to w.
func Backfill(ctx context.Context, cfg *config.Config, log zerolog.Logger, w io.Writer) error {
	if cfg.StartTime.IsZero() {
		return &config.UsageError{Err: errors.New("ingest backfill needs the earlier start-time: give --start-time (RFC 3339), e.g. --start-time 2024-01-01T00:00:00Z")}
	}
	b, st, err := openIdle(ctx, cfg, log, "ingest-backfill")
	if err != nil {
		return err
	}
	defer b.Close()
	to := cfg.StartTime.UTC()
	var cur position.Start
	ok, err := st.Get(position.KeyStartTime, &cur)
	if err != nil {
		return err
	}
	from := cur.StartTime.UTC()
	switch {
	case !ok:
		if err := st.Put(ctx, position.KeyStartTime, position.Start{StartTime: to}); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "No start-time was fixed yet; fixed it at %s: the first run reads from there.\n", to.Format(time.RFC3339))
		return err
	case to.Equal(from):
		_, err := fmt.Fprintf(w, "The start-time is %s already; nothing to do.\n", from.Format(time.RFC3339))
		return err
	case to.After(from):
		return fmt.Errorf("%w: %s is later than the stored start-time %s, and the events between them are read already; "+
			"keep the stored value, or reset ingest state to export again from the new time (delete the state bucket, or the storage directory with the embedded server)",
			ErrStartTimeLater, to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	// The recovery mark first: should this stop half way, the next run
	// still skips what the streams hold.
	reason := fmt.Sprintf("start-time moved earlier from %s to %s (ingest backfill)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	if err := st.Put(ctx, bus.RecoveryKey, recoveryState{Started: time.Now().UTC(), Reason: reason}); err != nil {
		return err
	}
	n, err := resetPositionsUpTo(ctx, st, from)
	if err != nil {
		return err
	}
	if err := st.Put(ctx, position.KeyStartTime, position.Start{StartTime: to}); err != nil {
		return err
	}
	log.Info().Time("from", from).Time("to", to).Int("positions_reset", n).Msg("start-time moved earlier")
	_, err = fmt.Fprintf(w, "Moved the start-time from %s to %s and reset %d saved positions (the dates up to %s).\n"+
		"Start ingest as usual: it reads from %s, and publishes only the events the streams do not hold yet.\n",
		from.Format(time.RFC3339), to.Format(time.RFC3339), n, position.Day(from), to.Format(time.RFC3339))
	return err
}

// resetPositionsUpTo removes the export positions of the UTC dates up to
// and including the date of t, and the search position, so that they are
// read again from the start-time.
func resetPositionsUpTo(ctx context.Context, st *position.Store, t time.Time) (int, error) {
	last := position.Day(t)
	var keys []string
	for _, prefix := range []string{position.PrefixChunk, position.PrefixDate} {
		for _, k := range st.Keys(prefix) {
			date, _, _ := strings.Cut(strings.TrimPrefix(k, prefix), ".")
			if date <= last { // "2006-01-02" sorts as dates do
				keys = append(keys, k)
			}
		}
	}
	keys = append(keys, st.Keys(position.KeySearch)...)
	for _, k := range keys {
		if err := st.Purge(ctx, k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}
