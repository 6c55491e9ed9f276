package reader

import (
	"fmt"
	"slices"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// sessionUploadType is the event that says a recording is ready.
const sessionUploadType = "session.upload"

// toEvent turns a Teleport event into a bus event. The body is the event's
// unstructured JSON as Teleport returned it.
func toEvent(u teleport.Event) bus.Event {
	return bus.Event{ID: u.ID, Type: u.Type, JSON: u.JSON, Index: u.Index, Time: u.Time}
}

// toSessionEvent converts one event of session sid's recording.
func toSessionEvent(sid string, u *auditlogpb.EventUnstructured) (bus.Event, error) {
	te, err := teleport.FromProto(u)
	if err != nil {
		return bus.Event{}, fmt.Errorf("session %s: %w", sid, err)
	}
	e := toEvent(te)
	e.Session = true
	e.SessionID = sid
	return e, nil
}

// Filter decides which audit events are published: Types (when set)
// lists the wanted types, Skip the unwanted ones (skip-event-types), and
// events older than Since (start-time) are dropped (the first export date
// starts at midnight).
type Filter struct {
	Types []string
	Skip  []string
	Since time.Time
}

// keep reports whether an audit event passes the filter.
func (f Filter) keep(typ string, at time.Time) bool {
	if !f.Since.IsZero() && !at.IsZero() && at.Before(f.Since) {
		return false
	}
	if len(f.Types) > 0 && !slices.Contains(f.Types, typ) {
		return false
	}
	return !slices.Contains(f.Skip, typ)
}
