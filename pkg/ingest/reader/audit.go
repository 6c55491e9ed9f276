package reader

import (
	"context"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// Recorder registers the recording a session.upload announces (Sessions).
type Recorder interface {
	Add(ctx context.Context, sid string, uploaded time.Time) error
}

// Audit is what the audit readers do with each event they read: keep it or
// filter it out, register the recording a session.upload announces (before
// the event's position can be saved, so the job is never lost), and
// publish it unless it is on the bus already.
type Audit struct {
	Filter Filter
	Out    Outlet
	// Recordings registers recordings; nil: recordings are not read.
	Recordings Recorder
	Prog       Progress
}

// handleAudit handles one audit event at position pos of tr's reader.
func handleAudit[P any](ctx context.Context, a *Audit, u teleport.Event, tr *position.Tracker[P], pos P) error {
	e := toEvent(u)
	if !a.Filter.keep(e.Type, e.Time) {
		tr.Skipped(pos)
		return nil
	}
	if e.Type == sessionUploadType && u.SID != "" && a.Recordings != nil {
		if err := a.Recordings.Add(ctx, u.SID, e.Time); err != nil {
			return err
		}
	}
	if a.Out.OnBus(e) || tr.OnBus(e.MsgID()) {
		tr.FoundOnBus(pos)
		return nil
	}
	done := tr.Published(pos)
	at := e.Time
	return a.Out.Send(ctx, e, func(err error) {
		if err == nil {
			a.Prog.Event(at)
		}
		done(err)
	})
}
