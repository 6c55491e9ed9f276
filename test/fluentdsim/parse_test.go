package fluentdsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParseBodyEdgeCases(t *testing.T) {
	now := time.Date(2025, 6, 7, 8, 9, 10, 500, time.UTC)
	cases := []struct {
		name     string
		body     string
		ids      []string
		dropped  int
		errHas   string
		jsonWant string // JSON of the first record
	}{
		{name: "whitespace everywhere", body: " [ { \"uid\" : \"a\" , \"time\" : \"2024-01-02T03:04:05Z\" } , { \"uid\":\"b\" } ] ",
			ids: []string{"a", "b"}, jsonWant: `{"uid":"a"}`},
		{name: "brackets and quotes inside strings", body: `{"uid":"x","data":"}]\"[{","nested":{"a":[1,{"b":"]"}]},"time":"2024-01-02T03:04:05Z"}`,
			ids: []string{"x"}, jsonWant: `{"uid":"x","data":"}]\"[{","nested":{"a":[1,{"b":"]"}]}}`},
		{name: "escaped key names", body: `{"ui\u0064":"esc","ti\u006de":"2024-01-02T03:04:05Z"}`, ids: []string{"esc"}, jsonWant: `{"ui\u0064":"esc"}`},
		{name: "duplicate keys: the last wins", body: `{"uid":"first","uid":"last"}`, ids: []string{"last"}},
		{name: "escaped uid value", body: `{"uid":"a\"b"}`, ids: []string{`a"b`}},
		{name: "empty object", body: `{}`, ids: []string{""}, jsonWant: `{}`},
		{name: "nested arrays are not records", body: `[[{"uid":"a"}],{"uid":"b"},null,true]`, ids: []string{"b"}, dropped: 3},
		{name: "trailing garbage", body: `{"uid":"a"} x`, dropped: 1},
		{name: "two objects (NDJSON)", body: "{\"uid\":\"a\"}\n{\"uid\":\"b\"}", dropped: 1},
		{name: "time too short", body: `{"time":"2024-01-02"}`, errHas: "invalid time format: value = 2024-01-02,"},
		{name: "time object", body: `{"time":{"s":1}}`, errHas: `value must be string: {"s":1}`},
		{name: "time with trailing text", body: `{"time":"2024-01-02T03:04:05+09:00 extra","uid":"t"}`, ids: []string{"t"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := parseBody([]byte(c.body), "test.log", now, nil, true)
			if c.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("error %v, want %q", err, c.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range res.records {
				ids = append(ids, r.id)
			}
			if strings.Join(ids, ",") != strings.Join(c.ids, ",") || res.dropped != c.dropped {
				t.Errorf("ids=%q dropped=%d, want ids=%q dropped=%d", ids, res.dropped, c.ids, c.dropped)
			}
			if c.jsonWant != "" && (len(res.records) == 0 || string(res.records[0].json) != c.jsonWant) {
				t.Errorf("record JSON = %s, want %s", res.records[0].json, c.jsonWant)
			}
		})
	}
}

// FuzzScanObject checks the hand-written scanner against encoding/json:
// for a valid object, the members it finds (the last of a repeated key)
// are the ones json.Unmarshal finds.
func FuzzScanObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":"}","b":[1,{"c":"]"}],"a":null}`, ` { "k\"" : { } , "x":-1.5e3 } `,
		`{"time":"2024-01-02T03:04:05Z","uid":"u","ei":0,"sid":"s","data":"\\"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := bytes.TrimSpace([]byte(s))
		if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
			return
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal(b, &want); err != nil {
			return
		}
		fields, end := scanObject(b, 0, nil)
		if end != len(b) {
			t.Fatalf("object ends at %d, want %d", end, len(b))
		}
		got := map[string]string{}
		for _, fl := range fields {
			var k string // decoded as encoding/json does (invalid UTF-8 → U+FFFD)
			if err := json.Unmarshal(fl.key, &k); err != nil {
				t.Fatalf("key %s: %v", fl.key, err)
			}
			got[k] = string(fl.val)
		}
		if len(got) != len(want) {
			t.Fatalf("found %d keys, encoding/json %d", len(got), len(want))
		}
		for k, v := range want {
			if got[k] != string(v) {
				t.Fatalf("key %q: %s, encoding/json %s", k, got[k], v)
			}
		}
	})
}

func TestMatchPatterns(t *testing.T) {
	cases := []struct {
		pattern string
		yes, no []string
	}{
		{"test.log", []string{"test.log"}, []string{"test.logs", "a.test.log", "testxlog"}},
		{"session.*.log", []string{"session.abc-1.log", "session..log"}, []string{"session.a.b.log", "session.abc.logs"}},
		{"a.**", []string{"a", "a.b", "a.b.c"}, []string{"ab", "b.a"}},
		{"**.log", []string{"log", "x.log", "x.y.log"}, []string{"xlog"}},
		{"**", []string{"", "anything.at.all"}, nil},
		{"{test,audit}.log", []string{"test.log", "audit.log"}, []string{"other.log"}},
		{"a.* b.c", []string{"a.x", "b.c"}, []string{"b.x"}},
	}
	for _, c := range cases {
		m, err := compileMatch([]string{c.pattern})
		if err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		for _, tag := range c.yes {
			if !m.matches(tag) {
				t.Errorf("<match %s> does not take %q", c.pattern, tag)
			}
		}
		for _, tag := range c.no {
			if m.matches(tag) {
				t.Errorf("<match %s> takes %q", c.pattern, tag)
			}
		}
	}
}

// FuzzParseBody checks that no body makes the parser panic, and that what it
// stores is never more than the body's objects.
func FuzzParseBody(f *testing.F) {
	for _, s := range []string{`[]`, `[{"uid":"a"},1,"x",{"time":"2024-01-02T03:04:05Z"}]`, `{"time":5}`, `[{]`, `"str"`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		res, err := parseBody([]byte(s), "session.x.log", time.Now(), []Poison{{Field: "p", Value: "1"}}, true)
		if err != nil {
			return
		}
		if n := strings.Count(s, "{"); len(res.records) > n {
			t.Fatalf("%d records from a body with %d '{'", len(res.records), n)
		}
		for _, r := range res.records {
			if !json.Valid(r.json) {
				t.Fatalf("stored record is not JSON: %s", r.json)
			}
		}
	})
}

// TestReusedParserMatchesFresh feeds one recordParser, as the handler's
// pool does, a run of varied bodies (good, refused half-way, dropped,
// different tags and sizes) and checks each result against a fresh parse.
func TestReusedParserMatchesFresh(t *testing.T) {
	now := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	poison := []Poison{{Field: "p", Value: "1"}}
	bodies := []struct{ tag, body string }{
		{"test.log", string(benchBody(5, 0))},
		{"test.log", `[{"uid":"a"},{"uid":"b","time":"bad"},{"uid":"c"}]`},
		{"test.log", `{"uid":"single","time":"2024-01-02T03:04:05Z"}`},
		{"session.s1.log", `[{"ei":1},{"ei":2,"sid":"other"},7,{"p":1}]`},
		{"session.s1.log", `[{"ei":3},"x",{"ei":4}]`},
		{"test.log", `not json`},
		{"test.log", `[]`},
		{"test.log", string(benchBody(2, 100))},
	}
	var reused recordParser
	for round := range 2 {
		for i, b := range bodies {
			for _, keep := range []bool{false, true} {
				want, wantErr := parseBody([]byte(b.body), b.tag, now, poison, keep)
				reused.reset(b.tag, now, poison, keep)
				got, gotErr := reused.body([]byte(b.body))
				if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || got.dropped != want.dropped || len(got.records) != len(want.records) {
					t.Fatalf("round %d body %d keep=%v: got %d records, dropped %d, err %v; want %d, %d, %v",
						round, i, keep, len(got.records), got.dropped, gotErr, len(want.records), want.dropped, wantErr)
				}
				for j := range want.records {
					g, w := got.records[j], want.records[j]
					if g.id != w.id || !g.time.Equal(w.time) || g.size != w.size || !bytes.Equal(g.json, w.json) {
						t.Fatalf("round %d body %d record %d: got %+v, want %+v", round, i, j, g, w)
					}
				}
			}
		}
	}
}

// TestFixedTimeMatchesParse: whenever the fast path reads a time, it is the
// one time.Parse reads; it takes the usual Teleport times; and parseTime
// with it answers as before on edge cases (time.Parse alone decides those).
func TestFixedTimeMatchesParse(t *testing.T) {
	cases := []string{
		"2024-01-02T03:04:05.461Z", "2024-01-02T03:04:05", "2024-02-29T00:00:00", "2023-02-29T00:00:00",
		"1900-02-29T00:00:00", "2000-02-29T23:59:59", "2024-04-31T00:00:00", "2024-12-31T23:59:59Z",
		"2024-00-10T00:00:00", "2024-13-10T00:00:00", "2024-01-00T00:00:00", "2024-01-32T00:00:00",
		"2024-01-02T24:00:00", "2024-01-02T23:60:00", "2024-01-02T23:59:60", "0000-01-01T00:00:00",
		"2024-01-02T3:04:05Z", "2024-1-02T03:04:05", "+024-01-02T03:04:05", "2024-01-02 03:04:05",
		"2024-01-02T03:04:0", "2024-01-02", "20x4-01-02T03:04:05", "2024-01-02T03:04:05+09:00",
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100_000 {
		b := []byte(fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02d", rng.IntN(10000), rng.IntN(14), rng.IntN(33), rng.IntN(26), rng.IntN(62), rng.IntN(62)))
		if rng.IntN(4) == 0 {
			b[rng.IntN(len(b))] = "0123456789-T:+ x"[rng.IntN(16)]
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		got, ok := fixedTime([]byte(s))
		want, err := time.Parse(timeLayout, s[:min(len(s), len(timeLayout))])
		if ok && (err != nil || !got.Equal(want) || got.Location() != want.Location()) {
			t.Fatalf("fixedTime(%q) = %v, time.Parse: %v, %v", s, got, want, err)
		}
		raw := json.RawMessage(`"` + s + `"`)
		gotT, gotErr := parseTime(raw)
		wantT, wantErr := parseTimeSlow(raw)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !gotT.Equal(wantT) {
			t.Fatalf("parseTime(%s) = %v, %v; without the fast path %v, %v", raw, gotT, gotErr, wantT, wantErr)
		}
	}
	for _, s := range []string{"2024-01-02T03:04:05.461Z", "2026-11-25T10:00:00.000Z", "2000-02-29T23:59:59"} {
		if _, ok := fixedTime([]byte(s)); !ok {
			t.Errorf("fast path refused %q", s)
		}
	}
}

// parseTimeSlow is parseTime as it was before its fast path.
func parseTimeSlow(raw json.RawMessage) (time.Time, error) {
	s, ok := rawString(raw)
	if !ok {
		return time.Time{}, &badRequest{msg: "value must be string: " + string(raw)}
	}
	if len(s) >= len(timeLayout) {
		if t, err := time.Parse(timeLayout, s[:len(timeLayout)]); err == nil {
			return t, nil
		}
	}
	return time.Time{}, &badRequest{msg: fmt.Sprintf(
		"invalid time format: value = %s, error_class = ArgumentError, error = string doesn't match", s)}
}
