package bus

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestEventSubject(t *testing.T) {
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{"dotted type", Event{Type: "user.login"}, "audit.user.login"},
		{"empty type", Event{Type: ""}, "audit.unknown"},
		{"space", Event{Type: "a b"}, "audit.a_b"},
		{"wildcards", Event{Type: "x.*.>"}, "audit.x._._"},
		{"wildcards inside tokens", Event{Type: "a*b.c>d"}, "audit.a_b.c_d"},
		{"empty tokens", Event{Type: "a..b."}, "audit.a._.b._"},
		{"only a dot", Event{Type: "."}, "audit._._"},
		{"control and tab", Event{Type: "a\tb\x00c\x7f"}, "audit.a_b_c_"},
		{"unicode kept", Event{Type: "café.ログイン"}, "audit.café.ログイン"},
		{"session", Event{Session: true, SessionID: "4b5e-11", Type: "print"}, "session.4b5e-11"},
		{"session id with dots", Event{Session: true, SessionID: "a.b*c"}, "session.a_b_c"},
		{"empty session id", Event{Session: true}, "session.unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.e.Subject()
			if got != tt.want {
				t.Fatalf("Subject() = %q, want %q", got, tt.want)
			}
			if !validSubject(got) {
				t.Fatalf("Subject() = %q is not a valid NATS publish subject", got)
			}
		})
	}
}

// validSubject applies the NATS rules for a publish subject: non-empty
// tokens, no wildcards, no whitespace.
func validSubject(s string) bool {
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return false
		}
	}
	return true
}

func TestEventMsgID(t *testing.T) {
	if got := (Event{ID: "abc", Type: "user.login"}).MsgID(); got != "abc" {
		t.Errorf("audit MsgID = %q, want the event id", got)
	}
	if got := (Event{ID: "abc", Session: true, SessionID: "s1", Index: 42}).MsgID(); got != "s1/42" {
		t.Errorf("session MsgID = %q, want s1/42", got)
	}
	a := Event{JSON: []byte(`{"a":1}`)}.MsgID()
	b := Event{JSON: []byte(`{"a":1}`)}.MsgID()
	c := Event{JSON: []byte(`{"a":2}`)}.MsgID()
	if !strings.HasPrefix(a, "sha256:") || a != b || a == c {
		t.Errorf("MsgID without id: %q %q %q; want a stable sha256 of the body", a, b, c)
	}
}

func TestNewMsgHeaders(t *testing.T) {
	tm := time.Date(2026, 11, 25, 21, 4, 5, 461_000_000, time.FixedZone("CET", 3600))
	audit := NewMsg(Event{ID: "id-1", Type: "user.login", Time: tm, JSON: []byte(`{"event":"user.login"}`)})
	wantAudit := nats.Header{
		"Nats-Msg-Id":         {"id-1"},
		"Teleport-Event-Type": {"user.login"},
		"Teleport-Event-Time": {"2026-11-25T20:04:05.461Z"},
		"Teleport-Event-Id":   {"id-1"},
	}
	if audit.Subject != "audit.user.login" || string(audit.Data) != `{"event":"user.login"}` {
		t.Errorf("audit message: subject %q body %q", audit.Subject, audit.Data)
	}
	if !maps.EqualFunc(audit.Header, wantAudit, slices.Equal[[]string]) {
		t.Errorf("audit headers = %v, want %v", audit.Header, wantAudit)
	}

	sess := NewMsg(Event{ID: "ev-9", Type: "print", Time: tm, JSON: []byte(`{}`), Session: true, SessionID: "s-1", Index: 9, Trimmed: true})
	wantSess := nats.Header{
		"Nats-Msg-Id":            {"s-1/9"},
		"Teleport-Event-Type":    {"print"},
		"Teleport-Event-Time":    {"2026-11-25T20:04:05.461Z"},
		"Teleport-Event-Id":      {"ev-9"},
		"Teleport-Session-Id":    {"s-1"},
		"Teleport-Event-Index":   {"9"},
		"Teleport-Event-Trimmed": {"true"},
	}
	if sess.Subject != "session.s-1" {
		t.Errorf("session subject = %q", sess.Subject)
	}
	if !maps.EqualFunc(sess.Header, wantSess, slices.Equal[[]string]) {
		t.Errorf("session headers = %v, want %v", sess.Header, wantSess)
	}
}

func TestParseMsgRoundTrip(t *testing.T) {
	tm := time.Date(2026, 1, 2, 3, 4, 5, 123_456_789, time.UTC)
	events := []Event{
		{ID: "id-1", Type: "user.login", Time: tm, JSON: []byte(`{"event":"user.login","uid":"id-1"}`)},
		{ID: "id-2", Type: "a b", Time: tm, JSON: []byte(`{}`), Trimmed: true},
		{ID: "id-3", Type: "", Time: tm, JSON: []byte(`{}`)},
		{ID: "ev", Type: "print", Time: tm, JSON: []byte(`{"ei":7}`), Session: true, SessionID: "sid-1", Index: 7},
	}
	for _, e := range events {
		m := NewMsg(e)
		got, err := ParseMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("ParseMsg(%q): %v", m.Subject, err)
		}
		if got.ID != e.ID || got.Type != e.Type || !got.Time.Equal(e.Time) || string(got.JSON) != string(e.JSON) ||
			got.Session != e.Session || got.SessionID != e.SessionID || got.Index != e.Index || got.Trimmed != e.Trimmed {
			t.Errorf("round trip of %+v gave %+v", e, got)
		}
	}
}

func TestParseMsgErrors(t *testing.T) {
	good := NewMsg(Event{ID: "s/1", Type: "print", Session: true, SessionID: "s", Index: 1, Time: time.Now()})
	for _, key := range []string{HeaderEventType, HeaderEventID, HeaderEventTime, HeaderSessionID, HeaderEventIndex} {
		h := maps.Clone(good.Header)
		h.Del(key)
		_, err := ParseMsg(good.Subject, h, nil)
		if !errors.Is(err, ErrNotEvent) || !strings.Contains(err.Error(), key) {
			t.Errorf("without %s: err = %v, want ErrNotEvent naming the header", key, err)
		}
	}
	h := maps.Clone(good.Header)
	h.Set(HeaderEventTime, "yesterday")
	if _, err := ParseMsg(good.Subject, h, nil); err == nil || !strings.Contains(err.Error(), "yesterday") {
		t.Errorf("bad time: err = %v", err)
	}
	h = maps.Clone(good.Header)
	h.Set(HeaderEventIndex, "x")
	if _, err := ParseMsg(good.Subject, h, nil); err == nil || !strings.Contains(err.Error(), HeaderEventIndex) {
		t.Errorf("bad index: err = %v", err)
	}
	if _, err := ParseMsg("audit.x", nil, nil); !errors.Is(err, ErrNotEvent) {
		t.Errorf("no headers: err = %v", err)
	}
}
