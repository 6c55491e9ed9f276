package reader

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// RecordingSource is how Teleport streams a session recording.
type RecordingSource interface {
	// StreamUnstructuredSessionEvents streams a recording from startIndex
	// (Teleport v17 and later).
	StreamUnstructuredSessionEvents(ctx context.Context, sessionID string, startIndex int64) (chan *auditlogpb.EventUnstructured, chan error)
	// StreamSessionEvents streams it through the older structured call.
	StreamSessionEvents(ctx context.Context, sessionID string, startIndex int64) (chan *auditlogpb.EventUnstructured, chan error)
}

// recorder streams one recording to session.<sid>, from the index saved
// in its position to its end, saving the index as PubAcks arrive.
type recorder struct {
	src  RecordingSource
	out  Outlet
	pos  *position.Recordings
	tail *position.Tail // the session stream's (nil in a dry run)
	skip []string       // skip-session-types
	log  zerolog.Logger

	structured atomic.Bool // the server lacks StreamUnstructuredSessionEvents
}

// stream publishes recording sid from its saved index to its end. An
// error leaves the position at what was acknowledged; the retry resumes
// there.
func (r *recorder) stream(ctx context.Context, sid string) error {
	ss, _, err := r.pos.Get(sid)
	if err != nil {
		return err
	}
	if ss.Ended() {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	structured := r.structured.Load()
	events, errc := r.open(ctx, sid, ss.Next, structured)
	tr, err := position.Resume(ctx, r.tail, ss.Next, ss.Floor, ss.Next > 0 || ss.Events > 0)
	if err != nil {
		return err
	}
	if tr.AssignFloor(&ss.Floor) {
		if err := r.pos.Save(ctx, ss); err != nil {
			return err
		}
	}
	commit := func(ctx context.Context, done bool) error {
		next, floor, moved, events, err := tr.CommitPoint()
		if err != nil {
			return err
		}
		ss.Events += events
		if !moved && !done {
			return nil
		}
		ss.Next, ss.Done, ss.Floor = next, done, &floor
		if done {
			ss.Finished = time.Now().UTC()
		}
		return r.pos.Save(ctx, ss)
	}
	last := time.Now()
	for {
		var u *auditlogpb.EventUnstructured
		var ok bool
		select {
		case u, ok = <-events:
		case err := <-errc:
			// Only this recording's publishes are waited for: the audit
			// readers may keep the publisher busy for long, and this
			// try's answer must be booked while it is fresh.
			if serr := tr.Settled(ctx); serr != nil {
				return serr
			}
			if cerr := commit(ctx, false); cerr != nil {
				return cerr
			}
			if teleport.IsNotImplemented(err) && !structured {
				// Said once, however many jobs learn it at once.
				if r.structured.CompareAndSwap(false, true) {
					r.log.Warn().Msg("server lacks StreamUnstructuredSessionEvents (Teleport older than v17): reading recordings with StreamSessionEvents")
				}
				return r.stream(ctx, sid)
			}
			return fmt.Errorf("stream session %s from index %d: %w", sid, ss.Next, err)
		}
		if !ok {
			break
		}
		if err := tr.Failed(); err != nil {
			return err
		}
		if err := r.publish(ctx, sid, ss.Next, u, tr); err != nil {
			return err
		}
		if time.Since(last) >= commitEvery {
			last = time.Now()
			if err := commit(ctx, false); err != nil {
				return err
			}
		}
	}
	if err := tr.Settled(ctx); err != nil {
		return err
	}
	return commit(ctx, true)
}

// publish sends one recording event unless its type is skipped or it is
// on the bus already.
func (r *recorder) publish(ctx context.Context, sid string, from int64, u *auditlogpb.EventUnstructured, tr *position.Tracker[int64]) error {
	idx := u.GetIndex()
	if idx < from {
		return nil // before the saved index: a server that ignored it
	}
	e, err := toSessionEvent(sid, u)
	if err != nil {
		return err
	}
	if slices.Contains(r.skip, e.Type) {
		tr.Skipped(idx + 1)
		return nil
	}
	if r.out.OnBus(e) || tr.OnBus(e.MsgID()) {
		tr.FoundOnBus(idx + 1)
		return nil
	}
	return r.out.Send(ctx, e, tr.Published(idx+1))
}

// open starts reading a recording, through the structured call once the
// server has said it lacks the unstructured one.
func (r *recorder) open(ctx context.Context, sid string, from int64, structured bool) (chan *auditlogpb.EventUnstructured, chan error) {
	if structured {
		return r.src.StreamSessionEvents(ctx, sid, from)
	}
	return r.src.StreamUnstructuredSessionEvents(ctx, sid, from)
}
