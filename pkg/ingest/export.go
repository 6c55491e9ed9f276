package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// stragglerDays is how many past dates are listed again on every poll,
// because Teleport can add chunks to a recent date after it ended.
const stragglerDays = 3

// commitEvery is how often a reader saves its acknowledged position while
// events flow; a crash re-reads at most this much, which JetStream's dedup
// window absorbs.
const commitEvery = time.Second

// errBulkUnsupported says the server has no bulk export API.
var errBulkUnsupported = errors.New("bulk export API not implemented by the server")

// exporter reads the audit log through the bulk export API: for each UTC
// date from start-time to today, the date's chunks in parallel, each from
// its saved cursor.
type exporter struct {
	in *ingester
}

// pass exports every chunk that is not done yet, listing each open date
// once. It returns errBulkUnsupported when the server answers
// NotImplemented.
func (x *exporter) pass(ctx context.Context, now time.Time) error {
	in := x.in
	dates := datesBetween(in.start, now)
	in.prog.setDates(len(dates), x.closedCount(dates))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(in.concurrency())
	var open []time.Time
	for _, d := range dates {
		if x.closed(d) {
			continue
		}
		chunks, err := x.listChunks(gctx, d)
		if err != nil {
			_ = g.Wait()
			return err
		}
		open = append(open, d)
		var todo []string
		for _, c := range chunks {
			var cs chunkState
			if _, err := in.st.get(chunkKey(d, c), &cs); err != nil {
				_ = g.Wait()
				return err
			}
			if !cs.Done {
				todo = append(todo, c)
			}
		}
		if len(todo) == 0 {
			in.prog.dateDone()
			continue
		}
		left := new(atomic.Int64)
		left.Store(int64(len(todo)))
		for _, c := range todo {
			g.Go(func() error {
				if err := x.exportChunkRetry(gctx, d, c); err != nil {
					return err
				}
				if left.Add(-1) == 0 {
					in.prog.dateDone()
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return x.closeDates(ctx, open, now)
}

// listChunks lists a date's chunks.
func (x *exporter) listChunks(ctx context.Context, date time.Time) ([]string, error) {
	s := x.in.src.GetEventExportChunks(ctx, &auditlogpb.GetEventExportChunksRequest{Date: timestamppb.New(date)})
	var chunks []string
	for s.Next() {
		chunks = append(chunks, s.Item().GetChunk())
	}
	if err := s.Done(); err != nil {
		if teleport.IsNotImplemented(err) {
			return nil, fmt.Errorf("%w: %v", errBulkUnsupported, err)
		}
		return nil, fmt.Errorf("list export chunks of %s: %w", date.Format(time.DateOnly), err)
	}
	return chunks, nil
}

// exportChunkRetry exports one chunk, retrying transient errors with
// backoff from the position saved by the failed attempt, so one broken
// stream does not stop the other chunks.
func (x *exporter) exportChunkRetry(ctx context.Context, date time.Time, chunk string) error {
	b := backoff.Backoff{Policy: backoff.Reconnect}
	for {
		var cs chunkState
		if _, err := x.in.st.get(chunkKey(date, chunk), &cs); err != nil {
			return err
		}
		err := x.exportChunk(ctx, date, chunk, cs)
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return err
		}
		x.in.m.readErrors.Inc()
		x.in.checkIdentity()
		// A stream cut after progress starts the backoff over: only
		// failures in a row make the wait grow.
		var after chunkState
		if _, gerr := x.in.st.get(chunkKey(date, chunk), &after); gerr == nil && after.Cursor != cs.Cursor {
			b.Reset()
		}
		d := retryDelay(&b, err)
		lvl := zerolog.WarnLevel
		if noRoom(err) {
			lvl = zerolog.DebugLevel // the pause is logged once
		}
		x.in.log.WithLevel(lvl).Err(err).Str("date", day(date)).Str("chunk", chunk).Dur("retry_in", d).Msg("export chunk failed, retrying")
		if err := backoff.Sleep(ctx, d); err != nil {
			return err
		}
	}
}

// retryable reports whether a read or publish error is worth another try.
func retryable(err error) bool {
	return errors.Is(err, errBus) || teleport.IsTransient(err)
}

// busRetryMax caps the wait before retrying after NATS failed (a state
// save, a publish or a scan that timed out): after a node loss the
// cluster answers again once it has elected leaders, within seconds, and
// a wait grown during the election would only add to the stall. A full
// stream or store (noRoom) keeps the longer waits: it lasts until someone
// makes room.
const busRetryMax = 2 * time.Second

// retryDelay is the wait before retrying after err: the backoff's next
// delay, capped at busRetryMax for a bus failure other than no room.
func retryDelay(b *backoff.Backoff, err error) time.Duration {
	d := b.Next()
	if errors.Is(err, errBus) && !noRoom(err) {
		d = min(d, busRetryMax)
	}
	return d
}

// exportChunk publishes one chunk's events from its saved cursor, saving
// the cursor as PubAcks arrive and marking the chunk done at its end.
func (x *exporter) exportChunk(ctx context.Context, date time.Time, chunk string, cs chunkState) error {
	in := x.in
	key := chunkKey(date, chunk)
	cs.Chunk = chunk
	seen, err := in.out.resumeSet(ctx, false, cs.Floor, cs.Cursor != "" || cs.Events > 0)
	if err != nil {
		return err
	}
	tr := newTracker(cs.Cursor).withFloor(in.out.floorFunc(false), seen)
	if err := saveFloor(ctx, in, key, &cs, &cs.Floor, tr); err != nil {
		return err
	}
	commit := func(ctx context.Context, done bool) error {
		cur, floor, moved, events, err := tr.commitPoint()
		if err != nil {
			return err
		}
		cs.Events += events
		if !moved && !done {
			return nil
		}
		cs.Cursor, cs.Done, cs.Floor = cur, done, &floor
		return in.st.put(ctx, key, cs)
	}
	s := in.src.ExportUnstructuredEvents(ctx, &auditlogpb.ExportUnstructuredEventsRequest{
		Date: timestamppb.New(date), Chunk: chunk, Cursor: cs.Cursor,
	})
	defer func() { _ = s.Done() }()
	last := time.Now()
	for s.Next() {
		item := s.Item()
		if err := tr.failed(); err != nil {
			return err
		}
		if err := handleAudit(ctx, in, item.Event, tr, item.Cursor); err != nil {
			return fmt.Errorf("export %s chunk %q: %w", date.Format(time.DateOnly), chunk, err)
		}
		if time.Since(last) >= commitEvery {
			last = time.Now()
			if err := commit(ctx, false); err != nil {
				return err
			}
		}
	}
	readErr := s.Done()
	if err := in.out.flush(ctx); err != nil {
		return err
	}
	if readErr != nil && !errors.Is(readErr, io.EOF) {
		// Save what was acknowledged so the retry starts there.
		if err := commit(ctx, false); err != nil {
			return err
		}
		return fmt.Errorf("export %s chunk %q: %w", date.Format(time.DateOnly), chunk, readErr)
	}
	if err := commit(ctx, true); err != nil {
		return err
	}
	in.prog.chunkDone()
	return nil
}

// saveFloor saves a position that has no floor yet (a reader that never
// published from it) with the floor of now, before its first publish: a
// restart then knows where its events, if any landed, are in the stream.
// A dry run saves nothing.
func saveFloor[P any](ctx context.Context, in *ingester, key string, v any, floor **uint64, tr *tracker[P]) error {
	if *floor != nil || in.out.pub == nil {
		return nil
	}
	f := tr.floor()
	*floor = &f
	return in.st.put(ctx, key, v)
}

// closedCount counts the dates not listed any more.
func (x *exporter) closedCount(dates []time.Time) int {
	n := 0
	for _, d := range dates {
		if x.closed(d) {
			n++
		}
	}
	return n
}

// closed reports whether a date is finished for good.
func (x *exporter) closed(date time.Time) bool {
	var ds dateState
	ok, _ := x.in.st.get(dateKey(date), &ds)
	return ok && ds.Closed
}

// closeDates marks the dates that are past the straggler window (and whose
// chunks are all done, which a successful pass guarantees) as closed, with
// their totals, and drops their chunk entries so the state stays small.
func (x *exporter) closeDates(ctx context.Context, dates []time.Time, now time.Time) error {
	limit := utcDate(now).AddDate(0, 0, -stragglerDays)
	for _, d := range dates {
		if !d.Before(limit) {
			continue
		}
		ds := dateState{Closed: true}
		for _, k := range x.in.st.keys(chunkPrefix(d)) {
			var cs chunkState
			if _, err := x.in.st.get(k, &cs); err == nil {
				ds.Chunks++
				ds.Events += cs.Events
			}
		}
		if err := x.in.st.put(ctx, dateKey(d), ds); err != nil {
			return err
		}
		for _, k := range x.in.st.keys(chunkPrefix(d)) {
			if err := x.in.st.purge(ctx, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// utcDate is midnight UTC of t's date.
func utcDate(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// datesBetween lists the UTC dates from start's to now's, inclusive.
func datesBetween(start, now time.Time) []time.Time {
	var out []time.Time
	for d, end := utcDate(start), utcDate(now); !d.After(end); d = d.AddDate(0, 0, 1) {
		out = append(out, d)
	}
	return out
}
