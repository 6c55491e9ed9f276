package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// pageSource is the one call the search path makes to Teleport.
type pageSource interface {
	SearchUnstructuredEvents(ctx context.Context, from, to time.Time, namespace string, eventTypes []string, limit int, order types.EventOrder, startKey string) ([]*auditlogpb.EventUnstructured, string, error)
}

// auditHandler filters and publishes one audit event at position pos (its
// id), reporting the PubAck to tr; see handleAudit.
type auditHandler func(ctx context.Context, e teleport.Event, tr *tracker[string], pos string) error

// searcher reads the audit log with SearchUnstructuredEvents paging, the
// path of servers without the bulk export API and of --cursor.
//
// The backlog from the saved position to now is read in time windows of
// window-size, one after the other; the window that holds now (the live
// one) is read to now, and the next pass goes on from its position.
// Within a window the next page is already being fetched while the
// current one is published: at most three pages are in memory (one
// fetched, one waiting, one publishing). The position is saved after each
// page, once every event of the page has its PubAck, so a crash at any
// point re-reads at most the pages in flight; the events of those already
// on the bus are found after the saved floor and not published again (see
// tracker).
//
// Windows of different days are not read side by side: against the
// file-log double on a 2-core machine that measured 0.88-1.12x the serial
// rate (see BenchmarkSearch), as every page already keeps a core busy
// parsing the days around it.
type searcher struct {
	src      pageSource
	handle   auditHandler
	pos      *searchPositions
	prog     *progress
	types    []string
	start    time.Time // start-time, for progress
	window   time.Duration
	pageSize int
	// resume and floorNow are the outlet's resumeSet and floorFunc for
	// the audit stream (nil: no floors, as in a dry run).
	resume   func(ctx context.Context, floor *uint64, progress bool) (map[string]struct{}, error)
	floorNow func() uint64
}

// newSearcher builds the search reader of an ingester.
func newSearcher(in *ingester) (*searcher, error) {
	pos, err := loadSearchPositions(in.st, in.start, in.cfg.Cursor)
	if err != nil {
		return nil, err
	}
	return &searcher{
		src: in.src,
		handle: func(ctx context.Context, e teleport.Event, tr *tracker[string], pos string) error {
			return handleAudit(ctx, in, e, tr, pos)
		},
		pos:      pos,
		prog:     in.prog,
		types:    in.cfg.Types,
		start:    in.start,
		window:   cmpOr(in.cfg.WindowSize, 24*time.Hour),
		pageSize: pageSize(in.cfg),
		resume: func(ctx context.Context, floor *uint64, progress bool) (map[string]struct{}, error) {
			return in.out.resumeSet(ctx, false, floor, progress)
		},
		floorNow: in.out.floorFunc(false),
	}, nil
}

// pageSize is the search limit: ingest.page-size, the server's maximum
// unless set.
func pageSize(cfg *config.Config) int {
	if n := cfg.Ingest.PageSize; n > 0 {
		return min(n, config.MaxPageSize)
	}
	return config.MaxPageSize
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// pass reads window after window from the saved position up to now.
func (s *searcher) pass(ctx context.Context, now time.Time) error {
	for {
		s.setDates(now)
		win := s.pos.next(s.window)
		if err := s.readWindow(ctx, win, now); err != nil {
			return err
		}
		if !win.end.Before(now) {
			return nil // the live window, read to now
		}
	}
}

// setDates reports the dates done: those before the first unfinished
// window.
func (s *searcher) setDates(now time.Time) {
	s.prog.setDates(len(datesBetween(s.start, now)), len(datesBetween(s.start, s.pos.windowStart()))-1)
}

// fetched is one page as Teleport answered it.
type fetched struct {
	key    string // the page's start key
	events []*auditlogpb.EventUnstructured
	next   string // the next page's key; "" at the end
}

// readWindow reads one window from its position: a goroutine fetches the
// pages, one ahead of the one being published.
func (s *searcher) readWindow(ctx context.Context, win window, now time.Time) error {
	// Teleport's search includes both ends; the event at a window's end
	// belongs to the next window only, else it is read twice.
	to := win.end.Add(-time.Nanosecond)
	live := !win.end.Before(now)
	if live {
		to = now
	}
	if to.Before(win.start) {
		return nil // a window that starts after now (a clock set back)
	}
	if err := s.resumeWindow(ctx, &win); err != nil {
		return err
	}
	pages := make(chan fetched, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(pages)
		return s.fetch(gctx, win.start, to, win.cursor, pages)
	})
	g.Go(func() error { return s.publish(gctx, win, live, pages) })
	return g.Wait()
}

// resumeWindow learns which events after the saved position are on the
// bus already (see tracker), and saves the position's floor before the
// first publish when it has none.
func (s *searcher) resumeWindow(ctx context.Context, win *window) error {
	if s.resume == nil || s.floorNow == nil {
		return nil
	}
	seen, err := s.resume(ctx, win.floor, s.pos.isSaved())
	if err != nil {
		return err
	}
	win.seen = seen
	if win.floor != nil {
		return nil
	}
	f := s.floorNow()
	win.floor = &f
	return s.pos.save(ctx, *win)
}

// errKeyStuck says the server answered a page with its own start key as
// the next one: paging would never advance.
var errKeyStuck = errors.New("the server returned the page's own start key as the next key")

// fetch reads the pages of [from, to] from key on, sending each to out.
func (s *searcher) fetch(ctx context.Context, from, to time.Time, key string, out chan<- fetched) error {
	for {
		events, next, err := s.src.SearchUnstructuredEvents(ctx, from, to, teleport.Namespace, s.types, s.pageSize, types.EventOrderAscending, key)
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
func (s *searcher) publish(ctx context.Context, win window, live bool, pages <-chan fetched) error {
	for p := range pages {
		events := p.events
		if p.key == win.cursor {
			events = afterID(events, win.lastID)
		} else {
			win.lastID = ""
		}
		lastID, floor, err := s.publishPage(ctx, events, win.lastID, win.seen)
		if err != nil {
			return err
		}
		if s.floorNow != nil {
			win.floor = &floor
		}
		changed := lastID != win.lastID || p.key != win.cursor
		win.lastID = lastID
		switch {
		case p.next != "":
			win.cursor, win.lastID = p.next, ""
		case !live:
			win.done = true
		default:
			win.cursor = p.key // caught up: the next pass reads this page again
		}
		if changed || p.next != "" || win.done {
			if err := s.pos.save(ctx, win); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// publishPage publishes one page and waits for its PubAcks; it returns
// the id of the last event of the page that is safely handled.
func (s *searcher) publishPage(ctx context.Context, page []*auditlogpb.EventUnstructured, lastID string, seen map[string]struct{}) (string, uint64, error) {
	tr := newTracker(lastID).withFloor(s.floorNow, seen)
	for _, u := range page {
		if err := tr.failed(); err != nil {
			break
		}
		e, err := teleport.FromProto(u)
		if err != nil {
			return "", 0, err
		}
		if err := s.handle(ctx, e, tr, u.GetId()); err != nil {
			return "", 0, err
		}
	}
	if err := tr.settled(ctx); err != nil {
		return "", 0, err
	}
	id, floor, _, err := tr.position()
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

// handleAudit filters one audit event and publishes it, registering its
// session recording first when it is a session.upload, so the recording
// job is in the state before the event's position can be saved.
func handleAudit[P any](ctx context.Context, in *ingester, u teleport.Event, tr *tracker[P], pos P) error {
	e := toEvent(u)
	if !in.filter.keep(e.Type, e.Time) {
		tr.skipped(pos)
		return nil
	}
	if e.Type == sessionUploadType {
		if sid := u.SID; sid != "" {
			if err := in.sessions.add(ctx, sid, e.Time); err != nil {
				return err
			}
		}
	}
	if in.out.onBus(e) || tr.onBus(e.MsgID()) {
		tr.foundOnBus(pos)
		return nil
	}
	done := tr.published(pos)
	at := e.Time
	return in.out.send(ctx, e, func(err error) {
		if err == nil {
			in.prog.event(at)
		}
		done(err)
	})
}
