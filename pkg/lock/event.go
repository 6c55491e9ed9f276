package lock

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// loginType is the Teleport event type of a login attempt.
const loginType = "user.login"

// login is what the watcher reads from a user.login event.
type login struct {
	// ID is the event id, the dedup key of the counter.
	ID string
	// User is the Teleport user; Login the OS login, often empty.
	User  string
	Login string
	// Failed is true when the event says success is false. An event
	// without a success field is not a failure: locking on a guess would
	// lock people out for nothing.
	Failed  bool
	Success bool
	// Time is the event's own time.
	Time time.Time
}

// loginFields are the user.login fields the watcher needs.
type loginFields struct {
	User    string `json:"user"`
	Login   string `json:"login"`
	Success *bool  `json:"success"`
	Time    string `json:"time"`
}

// parseLogin reads a user.login event. The window uses the event's own
// time field; the Teleport-Event-Time header, which carries the same
// value, is the fallback when the body has none.
func parseLogin(e bus.Event) (login, error) {
	if e.Type != loginType {
		return login{}, fmt.Errorf("event %s is a %q event, not %q", e.ID, e.Type, loginType)
	}
	var f loginFields
	if err := json.Unmarshal(e.JSON, &f); err != nil {
		return login{}, fmt.Errorf("event %s: body is not a user.login event: %w", e.ID, err)
	}
	l := login{ID: e.ID, User: f.User, Login: f.Login, Time: e.Time}
	if f.Success != nil {
		l.Failed, l.Success = !*f.Success, *f.Success
	}
	if f.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, f.Time)
		if err != nil {
			return login{}, fmt.Errorf("event %s: time %q is not an RFC 3339 time", e.ID, f.Time)
		}
		l.Time = t
	}
	l.Time = l.Time.UTC()
	return l, nil
}
