package ingest

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// searcher reads the audit log with SearchUnstructuredEvents paging, the
// path of servers without the bulk export API and of --cursor: a time
// window of window-size from the saved window start, pages of batch events
// from the saved page key, skipping events up to the last one handled.
type searcher struct {
	in *ingester
}

// pass pages forward until it reaches the present.
func (s *searcher) pass(ctx context.Context, now time.Time) error {
	in := s.in
	var st searchState
	ok, err := in.st.get(keySearch, &st)
	if err != nil {
		return err
	}
	if !ok {
		st = searchState{WindowStart: in.start, Cursor: in.cfg.Cursor}
	}
	window := in.cfg.WindowSize
	if window <= 0 {
		window = 24 * time.Hour
	}
	limit := in.cfg.Batch
	if limit <= 0 {
		limit = 20
	}
	in.prog.setDates(len(datesBetween(in.start, now)), len(datesBetween(in.start, st.WindowStart))-1)
	for {
		to := st.WindowStart.Add(window)
		live := !to.Before(now)
		if live {
			to = now
		}
		page, next, err := in.src.SearchUnstructuredEvents(ctx, st.WindowStart, to, teleport.Namespace,
			in.cfg.Types, limit, types.EventOrderAscending, st.Cursor)
		if err != nil {
			return fmt.Errorf("search events %s..%s: %w", st.WindowStart.Format(time.RFC3339), to.Format(time.RFC3339), err)
		}
		page = afterID(page, st.LastID)
		lastID, err := s.publishPage(ctx, page, st.LastID)
		if err != nil {
			return err
		}
		st.LastID = lastID
		switch {
		case next != "":
			st.Cursor, st.LastID = next, ""
		case !live:
			st.WindowStart, st.Cursor, st.LastID = to, "", ""
		}
		if len(page) > 0 || next != "" || !live {
			if err := in.st.put(ctx, keySearch, st); err != nil {
				return err
			}
			in.prog.setDates(len(datesBetween(in.start, now)), len(datesBetween(in.start, st.WindowStart))-1)
		}
		if next == "" && live {
			return nil
		}
	}
}

// publishPage publishes one page and waits for its PubAcks; it returns
// the id of the last event of the page that is safely handled.
func (s *searcher) publishPage(ctx context.Context, page []*auditlogpb.EventUnstructured, lastID string) (string, error) {
	tr := newTracker(lastID)
	var published atomic.Int64
	for _, u := range page {
		if err := tr.failed(); err != nil {
			break
		}
		e, err := teleport.FromProto(u)
		if err != nil {
			return "", err
		}
		if err := handleAudit(ctx, s.in, e, tr, u.GetId(), &published); err != nil {
			return "", err
		}
	}
	if err := s.in.out.flush(ctx); err != nil {
		return "", err
	}
	id, _, err := tr.position()
	return id, err
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
func handleAudit[P any](ctx context.Context, in *ingester, u teleport.Event, tr *tracker[P], pos P, published *atomic.Int64) error {
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
	if in.out.onBus(e) {
		tr.skipped(pos)
		return nil
	}
	done := tr.published(pos)
	at := e.Time
	return in.out.send(ctx, e, func(err error) {
		if err == nil {
			published.Add(1)
			in.prog.event(at)
		}
		done(err)
	})
}
