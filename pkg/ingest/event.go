package ingest

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

// filter decides which audit events are published: `types` (when set)
// lists the wanted types, `skip-event-types` the unwanted ones, and events
// older than start-time are dropped (the first export date starts at
// midnight).
type filter struct {
	types []string
	skip  []string
	since time.Time
}

// keep reports whether an audit event passes the filter.
func (f filter) keep(typ string, at time.Time) bool {
	if !f.since.IsZero() && !at.IsZero() && at.Before(f.since) {
		return false
	}
	if len(f.types) > 0 && !slices.Contains(f.types, typ) {
		return false
	}
	return !slices.Contains(f.skip, typ)
}
