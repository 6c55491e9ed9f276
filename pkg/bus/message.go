package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Event is one Teleport event as it travels on the bus: an audit event, or
// (Session set) one event of a session recording.
type Event struct {
	// ID is the event's id. Ingest sets it; an empty ID on an audit event
	// is replaced by a hash of JSON so deduplication still works.
	ID string
	// Type is the event type ("user.login", "print", …).
	Type string
	// Time is when the event happened.
	Time time.Time
	// JSON is the event exactly as Teleport returned it (the message body).
	JSON []byte

	// SessionID and Index identify a session recording event.
	SessionID string
	Index     int64
	// Session marks a session recording event (subject session.<sid>).
	Session bool

	// Trimmed is true when ingest shortened the event to fit the stream's
	// maximum message size.
	Trimmed bool
}

// Subject is the event's subject: session.<sid> for session recording
// events, audit.<type> otherwise.
func (e Event) Subject() string {
	if e.Session {
		return SessionSubject(e.SessionID)
	}
	return AuditSubject(e.Type)
}

// MsgID is the dedup key (Nats-Msg-Id): <sid>/<index> for session recording
// events, otherwise the event id, or "sha256:<hex of JSON>" when it has none.
func (e Event) MsgID() string {
	if e.Session {
		return e.SessionID + "/" + strconv.FormatInt(e.Index, 10)
	}
	if e.ID != "" {
		return e.ID
	}
	sum := sha256.Sum256(e.JSON)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NewMsg builds the message for e: its subject, its JSON as the body, and
// every header of the bus contract. Teleport-Event-Id is the event id, or
// the MsgID when the event has none.
func NewMsg(e Event) *nats.Msg {
	m := nats.NewMsg(e.Subject())
	m.Data = e.JSON
	id := e.ID
	if id == "" {
		id = e.MsgID()
	}
	m.Header.Set(HeaderMsgID, e.MsgID())
	m.Header.Set(HeaderEventType, e.Type)
	m.Header.Set(HeaderEventTime, e.Time.UTC().Format(time.RFC3339Nano))
	m.Header.Set(HeaderEventID, id)
	if e.Session {
		m.Header.Set(HeaderSessionID, e.SessionID)
		m.Header.Set(HeaderEventIndex, strconv.FormatInt(e.Index, 10))
	}
	if e.Trimmed {
		m.Header.Set(HeaderTrimmed, "true")
	}
	return m
}

// ErrNotEvent is wrapped by ParseMsg's errors: the message does not follow
// the bus contract.
var ErrNotEvent = errors.New("not a teleport-event-bus event")

// ParseMsg reads an event back from a message, as a consumer receives it
// (for a jetstream.Msg: ParseMsg(m.Subject(), m.Headers(), m.Data())).
// A message on session.> is a session recording event. A missing or
// malformed header is an error naming the header and the subject.
func ParseMsg(subject string, h nats.Header, data []byte) (Event, error) {
	e := Event{JSON: data, Session: strings.HasPrefix(subject, SessionPrefix+".")}
	var err error
	if e.Type, err = header(subject, h, HeaderEventType); err != nil {
		return Event{}, err
	}
	if e.ID, err = header(subject, h, HeaderEventID); err != nil {
		return Event{}, err
	}
	ts, err := header(subject, h, HeaderEventTime)
	if err != nil {
		return Event{}, err
	}
	if e.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return Event{}, fmt.Errorf("%w: message on %q: header %s %q is not an RFC 3339 time", ErrNotEvent, subject, HeaderEventTime, ts)
	}
	e.Trimmed = h.Get(HeaderTrimmed) == "true"
	if !e.Session {
		return e, nil
	}
	if e.SessionID, err = header(subject, h, HeaderSessionID); err != nil {
		return Event{}, err
	}
	idx, err := header(subject, h, HeaderEventIndex)
	if err != nil {
		return Event{}, err
	}
	if e.Index, err = strconv.ParseInt(idx, 10, 64); err != nil {
		return Event{}, fmt.Errorf("%w: message on %q: header %s %q is not an integer", ErrNotEvent, subject, HeaderEventIndex, idx)
	}
	return e, nil
}

// header returns a header that must be present (it may be empty).
func header(subject string, h nats.Header, key string) (string, error) {
	v := h.Values(key)
	if len(v) == 0 {
		return "", fmt.Errorf("%w: message on %q has no %s header", ErrNotEvent, subject, key)
	}
	return v[0], nil
}
