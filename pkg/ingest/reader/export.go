package reader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/internalutils/stream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// stragglerDays is how many past dates are listed again on every poll,
// because Teleport can add chunks to a recent date after it ended.
const stragglerDays = 3

// ErrBulkUnsupported says the server has no bulk export API.
var ErrBulkUnsupported = errors.New("bulk export API not implemented by the server")

// ExportSource is the bulk export API of Teleport (v17 and later).
type ExportSource interface {
	GetEventExportChunks(ctx context.Context, req *auditlogpb.GetEventExportChunksRequest) stream.Stream[*auditlogpb.EventExportChunk]
	ExportUnstructuredEvents(ctx context.Context, req *auditlogpb.ExportUnstructuredEventsRequest) stream.Stream[teleport.ExportedEvent]
}

// Exporter reads the audit log through the bulk export API: for each UTC
// date from Start to today, the date's chunks, Concurrency at a time, each
// from its saved cursor. A chunk that fails with a transient error is
// retried from the position its attempt saved, without stopping the
// others.
type Exporter struct {
	Src   ExportSource
	Audit *Audit
	Pos   *position.Export
	// Tail is the audit stream's (nil in a dry run).
	Tail        *position.Tail
	Prog        Progress
	Start       time.Time
	Concurrency int
	// Retrying, when set, is called before each retry of a failed chunk:
	// the run counts it and checks the identity.
	Retrying func()
	Log      zerolog.Logger
}

// Pass exports every chunk that is not done yet, listing each open date
// once. It returns ErrBulkUnsupported when the server answers
// NotImplemented.
func (x *Exporter) Pass(ctx context.Context, now time.Time) error {
	dates := datesBetween(x.Start, now)
	x.Prog.SetDates(len(dates), x.closedCount(dates))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(x.Concurrency, 1))
	var open []time.Time
	for _, d := range dates {
		if x.Pos.Closed(d) {
			continue
		}
		todo, err := x.openChunks(gctx, d)
		if err != nil {
			_ = g.Wait()
			return err
		}
		open = append(open, d)
		if len(todo) == 0 {
			x.Prog.DateDone()
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
					x.Prog.DateDone()
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

// openChunks lists a date's chunks that are not done.
func (x *Exporter) openChunks(ctx context.Context, date time.Time) ([]string, error) {
	chunks, err := x.listChunks(ctx, date)
	if err != nil {
		return nil, err
	}
	var todo []string
	for _, c := range chunks {
		cs, err := x.Pos.Chunk(date, c)
		if err != nil {
			return nil, err
		}
		if !cs.Done {
			todo = append(todo, c)
		}
	}
	return todo, nil
}

// listChunks lists a date's chunks.
func (x *Exporter) listChunks(ctx context.Context, date time.Time) ([]string, error) {
	s := x.Src.GetEventExportChunks(ctx, &auditlogpb.GetEventExportChunksRequest{Date: timestamppb.New(date)})
	var chunks []string
	for s.Next() {
		chunks = append(chunks, s.Item().GetChunk())
	}
	if err := s.Done(); err != nil {
		if teleport.IsNotImplemented(err) {
			return nil, fmt.Errorf("%w: %v", ErrBulkUnsupported, err)
		}
		return nil, fmt.Errorf("list export chunks of %s: %w", date.Format(time.DateOnly), err)
	}
	return chunks, nil
}

// exportChunkRetry exports one chunk, retrying transient errors with
// backoff from the position saved by the failed attempt, so one broken
// stream does not stop the other chunks.
func (x *Exporter) exportChunkRetry(ctx context.Context, date time.Time, chunk string) error {
	b := backoff.Backoff{Policy: backoff.Reconnect}
	for {
		cs, err := x.Pos.Chunk(date, chunk)
		if err != nil {
			return err
		}
		err = x.exportChunk(ctx, date, chunk, cs)
		if err == nil || ctx.Err() != nil || !Retryable(err) {
			return err
		}
		if x.Retrying != nil {
			x.Retrying()
		}
		// A stream cut after progress starts the backoff over: only
		// failures in a row make the wait grow.
		if after, gerr := x.Pos.Chunk(date, chunk); gerr == nil && after.Cursor != cs.Cursor {
			b.Reset()
		}
		d := RetryDelay(&b, err)
		lvl := zerolog.WarnLevel
		if NoRoom(err) {
			lvl = zerolog.DebugLevel // the pause is logged once
		}
		x.Log.WithLevel(lvl).Err(err).Str("date", position.Day(date)).Str("chunk", chunk).Dur("retry_in", d).Msg("export chunk failed, retrying")
		if err := backoff.Sleep(ctx, d); err != nil {
			return err
		}
	}
}

// exportChunk publishes one chunk's events from its saved cursor cs,
// saving the cursor as PubAcks arrive and marking the chunk done at its
// end.
func (x *Exporter) exportChunk(ctx context.Context, date time.Time, chunk string, cs position.Chunk) error {
	cs.Chunk = chunk
	tr, err := position.Resume(ctx, x.Tail, cs.Cursor, cs.Floor, cs.Cursor != "" || cs.Events > 0)
	if err != nil {
		return err
	}
	if tr.AssignFloor(&cs.Floor) {
		if err := x.Pos.SaveChunk(ctx, date, cs); err != nil {
			return err
		}
	}
	commit := func(ctx context.Context, done bool) error {
		cur, floor, moved, events, err := tr.CommitPoint()
		if err != nil {
			return err
		}
		cs.Events += events
		if !moved && !done {
			return nil
		}
		cs.Cursor, cs.Done, cs.Floor = cur, done, &floor
		return x.Pos.SaveChunk(ctx, date, cs)
	}
	s := x.Src.ExportUnstructuredEvents(ctx, &auditlogpb.ExportUnstructuredEventsRequest{
		Date: timestamppb.New(date), Chunk: chunk, Cursor: cs.Cursor,
	})
	defer func() { _ = s.Done() }()
	last := time.Now()
	for s.Next() {
		item := s.Item()
		if err := tr.Failed(); err != nil {
			return err
		}
		if err := handleAudit(ctx, x.Audit, item.Event, tr, item.Cursor); err != nil {
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
	if err := x.Audit.Out.Flush(ctx); err != nil {
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
	x.Prog.ChunkDone()
	return nil
}

// closedCount counts the dates not listed any more.
func (x *Exporter) closedCount(dates []time.Time) int {
	n := 0
	for _, d := range dates {
		if x.Pos.Closed(d) {
			n++
		}
	}
	return n
}

// closeDates closes the dates that are past the straggler window (and
// whose chunks are all done, which a successful pass guarantees).
func (x *Exporter) closeDates(ctx context.Context, dates []time.Time, now time.Time) error {
	limit := utcDate(now).AddDate(0, 0, -stragglerDays)
	for _, d := range dates {
		if !d.Before(limit) {
			continue
		}
		if err := x.Pos.Close(ctx, d); err != nil {
			return err
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
