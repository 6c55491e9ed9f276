package teleport

import (
	"errors"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
)

// Event is one audit or session event with its unstructured body already
// written as JSON: what ingest publishes.
type Event struct {
	ID    string
	Type  string // the event's type, or its body's "event" field when that is empty
	Index int64
	Time  time.Time // zero when the event carries none
	// JSON is the body with keys sorted and numbers written as protojson
	// writes them.
	JSON []byte
	// SID is the body's top-level "sid" string ("" if absent): the session
	// a session.upload event announces.
	SID string
}

// ExportedEvent is one event of the bulk export and the cursor to resume
// after it.
type ExportedEvent struct {
	Event  Event
	Cursor string
}

// errNoEvent is an export item without an event.
var errNoEvent = errors.New("empty event from teleport")

// FromProto converts an event decoded by the protobuf library.
func FromProto(u *auditlogpb.EventUnstructured) (Event, error) {
	if u == nil {
		return Event{}, errNoEvent
	}
	fields := u.GetUnstructured().GetFields()
	e := Event{
		ID:    u.GetId(),
		Type:  u.GetType(),
		Index: u.GetIndex(),
		JSON:  appendStruct(make([]byte, 0, 512), u.GetUnstructured()),
		SID:   fields["sid"].GetStringValue(),
	}
	if ts := u.GetTime(); ts != nil {
		e.Time = ts.AsTime().UTC()
	}
	if e.Type == "" {
		e.Type = fields["event"].GetStringValue()
	}
	return e, nil
}
