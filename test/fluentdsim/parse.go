package fluentdsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
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
	// json is the record as stored (without `time` unless keep_time_key);
	// only when the store needs it.
	json []byte
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
// poison record anywhere refuses the whole body. keepJSON asks for each
// record's JSON without `time` (Fluentd's default keep_time_key false).
func parseBody(body []byte, tag string, now time.Time, poison []Poison, keepJSON bool) (parseResult, error) {
	var p recordParser
	p.reset(tag, now, poison, keepJSON)
	return p.body(body)
}

// parserPool keeps recordParsers, with their buffers, between requests: a
// bench run parses millions of records, and a fresh records slice per
// request is most of the server's garbage.
var parserPool = sync.Pool{New: func() any { return new(recordParser) }}

// recordParser reads the objects of a body, reusing its field and record
// buffers from one body to the next.
type recordParser struct {
	tag      string
	now      time.Time
	poison   []Poison
	keepJSON bool
	// keepTimeKey is <parse>'s keep_time_key: `time` stays in the stored
	// record (set after reset; reset clears it).
	keepTimeKey bool
	fields      []field
	records     []parsed
}

// reset prepares p for a body posted to tag at now.
func (p *recordParser) reset(tag string, now time.Time, poison []Poison, keepJSON bool) {
	p.tag, p.now, p.poison, p.keepJSON = tag, now.Truncate(time.Second), poison, keepJSON
	p.keepTimeKey = false
}

// body is parseBody with p's settings. The records it returns share p's
// buffer: they are valid until p parses another body.
func (p *recordParser) body(body []byte) (parseResult, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || (body[0] != '{' && body[0] != '[') || !validJSON(body) {
		return parseResult{dropped: 1}, nil
	}
	p.records = p.records[:0]
	if body[0] == '{' {
		rec, _, err := p.parse(body, 0)
		if err != nil {
			return parseResult{}, err
		}
		p.records = append(p.records, rec)
		return parseResult{records: p.records}, nil
	}
	var res parseResult
	for i := skipWS(body, 1); body[i] != ']'; {
		if body[i] == '{' {
			rec, end, err := p.parse(body, i)
			if err != nil {
				return parseResult{}, err
			}
			p.records = append(p.records, rec)
			i = end
		} else {
			res.dropped++
			i = skipValue(body, i)
		}
		i = skipWS(body, i)
		if body[i] == ',' {
			i = skipWS(body, i+1)
		}
	}
	res.records = p.records
	return res, nil
}

// parse reads the object at body[i]: its time, its id, and the poison rules.
func (p *recordParser) parse(body []byte, i int) (parsed, int, error) {
	var end int
	p.fields, end = scanObject(body, i, p.fields[:0])
	rec := parsed{time: p.now, size: end - i}
	var timeVal, uid, sid, ei json.RawMessage
	for _, f := range p.fields {
		// The key is unquoted once per field rather than once per name
		// it is compared with.
		name := f.name()
		for _, rule := range p.poison {
			if string(name) == rule.Field && rawEquals(f.val, rule.Value) {
				return parsed{}, 0, &badRequest{msg: fmt.Sprintf("poison record: field %q equals %q", rule.Field, rule.Value)}
			}
		}
		switch string(name) {
		case "time":
			timeVal = f.val
		case "uid":
			uid = f.val
		case "sid":
			sid = f.val
		case "ei":
			ei = f.val
		}
	}
	if timeVal != nil {
		t, err := parseTime(timeVal)
		if err != nil {
			return parsed{}, 0, err
		}
		rec.time = t
	}
	rec.id = recordID(p.tag, uid, sid, ei)
	if p.keepJSON {
		rec.json = compactRecord(p.fields, !p.keepTimeKey)
	}
	return rec, end, nil
}

// parseTime reads a `time` value with time_type string and the configured
// format, failing with Fluentd's messages.
func parseTime(raw json.RawMessage) (time.Time, error) {
	// The common case, without time.Parse and without copying the value:
	// a string with no escapes that starts with a well-formed time.
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		if t, ok := fixedTime(raw[1 : len(raw)-1]); ok {
			return t, nil
		}
	}
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

// fixedTime reads timeLayout at the start of s as time.Parse does, in the
// common case only: every field all digits and within its range. It reports
// false for anything else, and time.Parse then has the last word (and words
// the error). TestFixedTimeMatchesParse holds the two to the same results.
func fixedTime(s []byte) (time.Time, bool) {
	if len(s) < len(timeLayout) || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := digitsAt(s, 0, 4)
	month, ok2 := digitsAt(s, 5, 2)
	day, ok3 := digitsAt(s, 8, 2)
	hour, ok4 := digitsAt(s, 11, 2)
	minute, ok5 := digitsAt(s, 14, 2)
	sec, ok6 := digitsAt(s, 17, 2)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 ||
		month < 1 || month > 12 || day < 1 || day > daysIn(time.Month(month), year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC), true
}

// digitsAt reads the n decimal digits at s[from:].
func digitsAt(s []byte, from, n int) (int, bool) {
	v := 0
	for _, c := range s[from : from+n] {
		if !isDigit(c) {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// daysIn is the number of days in month m of year.
func daysIn(m time.Month, year int) int {
	switch m {
	case time.February:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case time.April, time.June, time.September, time.November:
		return 30
	}
	return 31
}

// recordID is the key duplicates are detected by: (`sid`, `ei`) as
// "<sid>/<ei>" on session tags (`session.…`; the sid is taken from the tag
// when the event has none, as print events do not), else `uid`, else
// "<sid>/<ei>" when both are present, else "" (not tracked).
func recordID(tag string, uidRaw, sidRaw, ei json.RawMessage) string {
	if strings.HasPrefix(tag, "session.") && len(ei) > 0 {
		sid, _ := rawString(sidRaw)
		if sid == "" {
			sid = sessionFromTag(tag)
		}
		return sid + "/" + string(ei)
	}
	if uid, ok := rawString(uidRaw); ok && uid != "" {
		return uid
	}
	// The sid is decoded only when it is needed: most audit events have a
	// uid, and decoding copies.
	if sid, _ := rawString(sidRaw); sid != "" && len(ei) > 0 {
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
