package reader

import (
	"context"
	"errors"
	"fmt"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// PageSource is the one call the search path makes to Teleport.
type PageSource interface {
	SearchUnstructuredEvents(ctx context.Context, from, to time.Time, namespace string, eventTypes []string, limit int, order types.EventOrder, startKey string) ([]*auditlogpb.EventUnstructured, string, error)
}

// Searcher reads the audit log with SearchUnstructuredEvents paging, the
// path of servers without the bulk export API and of --cursor.
//
// The backlog from the saved position to now is read in time windows of
// Window, one after the other; the window that holds now (the live one)
// is read to now, and the next pass goes on from its position. Within a
// window the next page is already being fetched while the current one is
// published: at most three pages are in memory (one fetched, one waiting,
// one publishing). The position is saved after each page, once every
// event of the page has its PubAck, so a crash at any point re-reads at
// most the pages in flight; the events of those already on the bus are
// found after the saved floor and not published again (see
// position.Tracker).
//
// Windows of different days are not read side by side: against the
// file-log double on a 2-core machine that measured 0.88-1.12x the serial
// rate (see BenchmarkSearch), as every page already keeps a core busy
// parsing the days around it.
type Searcher struct {
	Src   PageSource
	Audit *Audit
	Pos   *position.Paging
	// Tail is the audit stream's (nil in a dry run).
	Tail *position.Tail
	Prog Progress
	// Types are the event types asked for (none: all).
	Types    []string
	Start    time.Time // start-time, for progress
	Window   time.Duration
	PageSize int
}

// Pass reads window after window from the saved position up to now.
func (s *Searcher) Pass(ctx context.Context, now time.Time) error {
	for {
		s.setDates(now)
		win := s.Pos.Next(s.Window)
		if err := s.readWindow(ctx, win, now); err != nil {
			return err
		}
		if !win.End.Before(now) {
			return nil // the live window, read to now
		}
	}
}

// setDates reports the dates done: those before the first unfinished
// window.
func (s *Searcher) setDates(now time.Time) {
	s.Prog.SetDates(len(datesBetween(s.Start, now)), len(datesBetween(s.Start, s.Pos.WindowStart()))-1)
}

// fetched is one page as Teleport answered it.
type fetched struct {
	key    string // the page's start key
	events []*auditlogpb.EventUnstructured
	next   string // the next page's key; "" at the end
}

// readWindow reads one window from its position: a goroutine fetches the
// pages, one ahead of the one being published.
func (s *Searcher) readWindow(ctx context.Context, win position.Window, now time.Time) error {
	// Teleport's search includes both ends; the event at a window's end
	// belongs to the next window only, else it is read twice.
	to := win.End.Add(-time.Nanosecond)
	live := !win.End.Before(now)
	if live {
		to = now
	}
	if to.Before(win.Start) {
		return nil // a window that starts after now (a clock set back)
	}
	seen, err := s.resumeWindow(ctx, &win)
	if err != nil {
		return err
	}
	pages := make(chan fetched, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(pages)
		return s.fetch(gctx, win.Start, to, win.Cursor, pages)
	})
	g.Go(func() error { return s.publish(gctx, win, seen, live, pages) })
	return g.Wait()
}

// resumeWindow learns which events after the saved position are on the
// bus already (the tail scan), and saves the position's floor before the
// first publish when it has none.
func (s *Searcher) resumeWindow(ctx context.Context, win *position.Window) (map[string]struct{}, error) {
	seen, err := s.Tail.Seen(ctx, win.Floor, s.Pos.Saved())
	if err != nil || win.Floor != nil || s.Tail == nil {
		return seen, err
	}
	f := s.Tail.FloorFunc()()
	win.Floor = &f
	return seen, s.Pos.Save(ctx, *win)
}

// errKeyStuck says the server answered a page with its own start key as
// the next one: paging would never advance.
var errKeyStuck = errors.New("the server returned the page's own start key as the next key")

// fetch reads the pages of [from, to] from key on, sending each to out.
func (s *Searcher) fetch(ctx context.Context, from, to time.Time, key string, out chan<- fetched) error {
	for {
		events, next, err := s.Src.SearchUnstructuredEvents(ctx, from, to, teleport.Namespace, s.Types, s.PageSize, types.EventOrderAscending, key)
		if err != nil {
			return fmt.Errorf("search events %s..%s: %w", from.Format(time.RFC3339), to.Format(time.RFC3339), err)
		}
		if next != "" && next == key {
			return fmt.Errorf("search events %s..%s from key %q: %w", from.Format(time.RFC3339), to.Format(time.RFC3339), key, errKeyStuck)
		}
		select {
		case out <- fetched{key: key, events: events, next: next}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if next == "" {
			return nil
		}
		key = next
	}
}

// publish publishes the fetched pages of a window in order and saves the
// window's position after each page's PubAcks.
func (s *Searcher) publish(ctx context.Context, win position.Window, seen map[string]struct{}, live bool, pages <-chan fetched) error {
	for p := range pages {
		events := p.events
		if p.key == win.Cursor {
			events = afterID(events, win.LastID)
		} else {
			win.LastID = ""
		}
		lastID, floor, err := s.publishPage(ctx, events, win.LastID, seen)
		if err != nil {
			return err
		}
		if s.Tail != nil {
			win.Floor = &floor
		}
		changed := lastID != win.LastID || p.key != win.Cursor
		win.LastID = lastID
		switch {
		case p.next != "":
			win.Cursor, win.LastID = p.next, ""
		case !live:
			win.Done = true
		default:
			win.Cursor = p.key // caught up: the next pass reads this page again
		}
		if changed || p.next != "" || win.Done {
			if err := s.Pos.Save(ctx, win); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// publishPage publishes one page and waits for its PubAcks; it returns
// the id of the last event of the page that is safely handled, and the
// floor that goes with it.
func (s *Searcher) publishPage(ctx context.Context, page []*auditlogpb.EventUnstructured, lastID string, seen map[string]struct{}) (string, uint64, error) {
	tr := position.NewTracker(lastID).WithFloor(s.Tail.FloorFunc(), seen)
	for _, u := range page {
		if err := tr.Failed(); err != nil {
			break
		}
		e, err := teleport.FromProto(u)
		if err != nil {
			return "", 0, err
		}
		if err := handleAudit(ctx, s.Audit, e, tr, u.GetId()); err != nil {
			return "", 0, err
		}
	}
	if err := tr.Settled(ctx); err != nil {
		return "", 0, err
	}
	id, floor, _, err := tr.Position()
	return id, floor, err
}

// afterID drops the events up to and including the one with id lastID:
// they were handled before the page was read again.
func afterID(page []*auditlogpb.EventUnstructured, lastID string) []*auditlogpb.EventUnstructured {
	if lastID == "" {
		return page
	}
	for i, u := range page {
		if u.GetId() == lastID {
			return page[i+1:]
		}
	}
	return page
}
