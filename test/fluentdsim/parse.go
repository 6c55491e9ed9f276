package fluentdsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// timeLayout is fluent.conf's `time_format %Y-%m-%dT%H:%M:%S` in Go's
// notation. Text after the seconds (".461Z") is ignored, as Fluentd's
// strptime ignores it; times are read as UTC (`utc true`).
const timeLayout = "2006-01-02T15:04:05"

// parsed is one record of a request body, ready to store.
type parsed struct {
	id   string
	time time.Time
	size int
	// fields is the decoded record without `time`; kept only until the
	// request's records are stored.
	fields map[string]json.RawMessage
}

// parseResult is what a request body holds: records to store, and the count
// of bodies or elements that were answered 2xx but cannot be stored.
type parseResult struct {
	records []parsed
	dropped int
}

// badRequest is a 400 answer, with Fluentd's message.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

// parseBody reads a request body the way in_http with a json <parse> section
// does: an object is one record, an array is one record per object element
// (other elements are skipped), anything else — malformed JSON, an empty
// body, a top-level string — yields nothing and no error. A bad `time` or a
// poison record anywhere refuses the whole body.
func parseBody(body []byte, tag string, now time.Time, poison []Poison) (parseResult, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return parseResult{dropped: 1}, nil
	}
	switch body[0] {
	case '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return parseResult{dropped: 1}, nil
		}
		rec, err := parseRecord(m, len(body), tag, now, poison)
		if err != nil {
			return parseResult{}, err
		}
		return parseResult{records: []parsed{rec}}, nil
	case '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(body, &elems); err != nil {
			return parseResult{dropped: 1}, nil
		}
		res := parseResult{records: make([]parsed, 0, len(elems))}
		for _, el := range elems {
			if len(el) == 0 || el[0] != '{' {
				res.dropped++
				continue
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(el, &m); err != nil {
				res.dropped++
				continue
			}
			rec, err := parseRecord(m, len(el), tag, now, poison)
			if err != nil {
				return parseResult{}, err
			}
			res.records = append(res.records, rec)
		}
		return res, nil
	default:
		return parseResult{dropped: 1}, nil
	}
}

// parseRecord takes `time` out of a decoded record and finds its id.
func parseRecord(m map[string]json.RawMessage, size int, tag string, now time.Time, poison []Poison) (parsed, error) {
	for _, p := range poison {
		if v, ok := m[p.Field]; ok && rawEquals(v, p.Value) {
			return parsed{}, &badRequest{msg: fmt.Sprintf("poison record: field %q equals %q", p.Field, p.Value)}
		}
	}
	rec := parsed{time: now.Truncate(time.Second), size: size, fields: m}
	if raw, ok := m["time"]; ok {
		t, err := parseTime(raw)
		if err != nil {
			return parsed{}, err
		}
		rec.time = t
		delete(m, "time")
	}
	rec.id = recordID(m, tag)
	return rec, nil
}

// parseTime reads a `time` value with time_type string and the configured
// format, failing with Fluentd's messages.
func parseTime(raw json.RawMessage) (time.Time, error) {
	s, ok := rawString(raw)
	if !ok {
		v := string(raw)
		if v == "null" {
			v = "" // Ruby prints nil as nothing
		}
		return time.Time{}, &badRequest{msg: "value must be string: " + v}
	}
	if len(s) >= len(timeLayout) {
		if t, err := time.Parse(timeLayout, s[:len(timeLayout)]); err == nil {
			return t, nil
		}
	}
	return time.Time{}, &badRequest{msg: fmt.Sprintf(
		"invalid time format: value = %s, error_class = ArgumentError, error = string doesn't match", s)}
}

// recordID is the key duplicates are detected by: (`sid`, `ei`) as
// "<sid>/<ei>" on session tags (`session.…`; the sid is taken from the tag
// when the event has none, as print events do not), else `uid`, else
// "<sid>/<ei>" when both are present, else "" (not tracked).
func recordID(m map[string]json.RawMessage, tag string) string {
	sid, _ := rawString(m["sid"])
	ei := m["ei"]
	if strings.HasPrefix(tag, "session.") && len(ei) > 0 {
		if sid == "" {
			sid = sessionFromTag(tag)
		}
		return sid + "/" + string(ei)
	}
	if uid, ok := rawString(m["uid"]); ok && uid != "" {
		return uid
	}
	if sid != "" && len(ei) > 0 {
		return sid + "/" + string(ei)
	}
	return ""
}

// sessionFromTag returns <sid> of "session.<sid>.log" (the tag the sink
// builds from session-url), or the second tag part.
func sessionFromTag(tag string) string {
	rest := strings.TrimPrefix(tag, "session.")
	if i := strings.LastIndexByte(rest, '.'); i >= 0 {
		return rest[:i]
	}
	return rest
}

// rawString decodes a JSON string value; ok is false for other values.
func rawString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// rawEquals compares a JSON value with a poison value: strings by their
// text, anything else by its JSON.
func rawEquals(raw json.RawMessage, want string) bool {
	if s, ok := rawString(raw); ok {
		return s == want
	}
	return string(raw) == want
}
