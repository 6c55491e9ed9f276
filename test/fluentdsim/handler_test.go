package fluentdsim

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestReferenceTable checks every row of REFERENCE.md's in_http table.
func TestReferenceTable(t *testing.T) {
	const (
		good  = `{"event":"user.login","uid":"u1","time":"2024-01-02T03:04:05.461Z"}`
		good2 = `{"event":"user.login","uid":"u2","time":"2024-01-02T03:04:06.000Z"}`
	)
	rows := []struct {
		name      string
		tag, body string
		faults    Faults
		code      int
		bodyHas   string // for 4xx/5xx answers
		stored    int64
		dropped   int64
	}{
		{name: "object", tag: "test.log", body: good, code: 200, stored: 1},
		{name: "array", tag: "test.log", body: "[" + good + "," + good2 + "]", code: 200, stored: 2},
		{name: "empty array", tag: "test.log", body: "[]", code: 200},
		{name: "malformed JSON", tag: "test.log", body: `{"event":`, code: 200, dropped: 1},
		{name: "empty body", tag: "test.log", body: "", code: 200, dropped: 1},
		{name: "top-level string", tag: "test.log", body: `"hello"`, code: 200, dropped: 1},
		{name: "top-level number", tag: "test.log", body: `42`, code: 200, dropped: 1},
		{name: "array with a non-object", tag: "test.log", body: "[" + good + `,"x",7]`, code: 200, stored: 1, dropped: 2},
		{name: "time not in the format", tag: "test.log", body: `{"uid":"u3","time":"02/01/2024 03:04:05"}`,
			code: 400, bodyHas: "400 Bad Request\ninvalid time format: value = 02/01/2024 03:04:05"},
		{name: "time not a string", tag: "test.log", body: `{"uid":"u3","time":1704164645}`,
			code: 400, bodyHas: "value must be string: 1704164645"},
		{name: "time null", tag: "test.log", body: `{"uid":"u3","time":null}`, code: 400, bodyHas: "value must be string"},
		{name: "array where one element is bad", tag: "test.log",
			body: "[" + good + `,{"uid":"u4","time":"yesterday"},` + good2 + "]", code: 400, bodyHas: "invalid time format"},
		{name: "tag with no matching <match>", tag: "other.log", body: "[" + good + "," + good2 + "]", code: 200, dropped: 2},
		{name: "session tag matches session.*.log", tag: "session.abc.log", body: `{"sid":"abc","ei":1,"event":"print"}`,
			code: 200, stored: 1},
		{name: "emit fails", tag: "test.log", body: good, faults: Faults{EmitFail: true}, code: 500,
			bodyHas: "500 Internal Server Error"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			s := startServer(t, Options{MatchTags: []string{"test.log", "session.*.log"}, Faults: row.faults})
			c := newClient(t, getPKI(t).client)
			r := mustPost(t, c, s, row.tag, row.body)
			if r.code != row.code {
				t.Fatalf("status = %d (%q), want %d", r.code, r.body, row.code)
			}
			if row.code < 300 && r.body != "" {
				t.Errorf("success body = %q, want empty", r.body)
			}
			if !strings.Contains(r.body, row.bodyHas) {
				t.Errorf("body = %q, want it to contain %q", r.body, row.bodyHas)
			}
			st := s.Stats()
			if st.StoredTotal != row.stored || st.Dropped != row.dropped {
				t.Errorf("stored=%d dropped=%d, want stored=%d dropped=%d", st.StoredTotal, st.Dropped, row.stored, row.dropped)
			}
			wantRejected, wantErrors := int64(0), int64(0)
			if row.code >= 500 {
				wantErrors = 1
			} else if row.code >= 400 {
				wantRejected = 1
			}
			if st.Rejected != wantRejected || st.Errors != wantErrors {
				t.Errorf("rejected=%d errors=%d, want %d and %d", st.Rejected, st.Errors, wantRejected, wantErrors)
			}
		})
	}
}

func TestTimeParsedAndRemoved(t *testing.T) {
	s := startServer(t, Options{KeepRecords: true})
	c := newClient(t, getPKI(t).client)
	before := time.Now().UTC().Truncate(time.Second)
	body := `[{"uid":"a","time":"2024-01-02T03:04:05.461Z","user":"alice"},{"uid":"b","user":"bob"}]`
	if r := mustPost(t, c, s, "test.log", body); r.code != 200 {
		t.Fatalf("status %d %q", r.code, r.body)
	}
	recs := s.Records("test.log")
	if len(recs) != 2 {
		t.Fatalf("stored %d records, want 2", len(recs))
	}
	if want := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC); !recs[0].Time.Equal(want) {
		t.Errorf("time = %v, want %v (fraction and zone ignored)", recs[0].Time, want)
	}
	if got := string(recs[0].JSON); got != `{"uid":"a","user":"alice"}` {
		t.Errorf("stored record = %s, want the time key removed", got)
	}
	if recs[1].Time.Before(before) || recs[1].Time.After(time.Now()) {
		t.Errorf("record without time stamped %v, want the receive time (≥ %v)", recs[1].Time, before)
	}
	if recs[0].ID != "a" || recs[1].ID != "b" {
		t.Errorf("ids = %q, %q", recs[0].ID, recs[1].ID)
	}
}

func TestGzipBody(t *testing.T) {
	s := startServer(t, Options{})
	c := newClient(t, getPKI(t).client)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(`[{"uid":"g1"},{"uid":"g2"},{"uid":"g3"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := post(t, c, s, "test.log", buf.Bytes(), "Content-Encoding", "gzip")
	if err != nil || r.code != 200 {
		t.Fatalf("gzip POST: %v %+v", err, r)
	}
	if got := s.Stats().Stored["test.log"]; got != 3 {
		t.Errorf("stored %d, want 3", got)
	}
	// A body that claims gzip but is not is refused.
	if r := mustPost(t, c, s, "test.log", `{"uid":"x"}`, "Content-Encoding", "gzip"); r.code != 400 {
		t.Errorf("bad gzip: status %d, want 400", r.code)
	}
}

func TestURLPathBecomesTag(t *testing.T) {
	s := startServer(t, Options{})
	c := newClient(t, getPKI(t).client)
	mustPost(t, c, s, "session.s1.log", `{"ei":0,"sid":"s1"}`)
	mustPost(t, c, s, "a/b/c", `{"uid":"x"}`)
	st := s.Stats()
	if st.Stored["session.s1.log"] != 1 || st.Stored["a.b.c"] != 1 {
		t.Errorf("stored per tag = %v, want session.s1.log=1 a.b.c=1", st.Stored)
	}
}

func TestDuplicatesCounted(t *testing.T) {
	s := startServer(t, Options{})
	c := newClient(t, getPKI(t).client)
	audit := `[{"uid":"u1","ei":0,"sid":"s9","event":"session.start"},{"uid":"u2"}]`
	mustPost(t, c, s, "test.log", audit)
	mustPost(t, c, s, "test.log", audit)
	mustPost(t, c, s, "test.log", `{"uid":"u3"}`)
	// Session events: keyed by (sid, ei); print events carry no sid, it comes from the tag.
	mustPost(t, c, s, "session.s1.log", `[{"ei":1,"event":"print"},{"ei":2,"event":"print"}]`)
	mustPost(t, c, s, "session.s1.log", `{"ei":2,"event":"print","uid":"other"}`)

	st := s.Stats()
	if st.Stored["test.log"] != 5 || st.Stored["session.s1.log"] != 3 {
		t.Errorf("stored = %v", st.Stored)
	}
	if st.Duplicates["test.log"] != 2 || st.Duplicates["session.s1.log"] != 1 || st.DuplicatesTotal != 3 {
		t.Errorf("duplicates = %v (total %d), want test.log=2 session.s1.log=1", st.Duplicates, st.DuplicatesTotal)
	}
	ids := s.IDs()
	want := map[string]int{"u1": 2, "u2": 2, "u3": 1, "s1/1": 1, "s1/2": 2}
	if len(ids) != len(want) {
		t.Errorf("ids = %v, want %v", ids, want)
	}
	for id, n := range want {
		if ids[id] != n {
			t.Errorf("ids[%q] = %d, want %d", id, ids[id], n)
		}
	}
	if got := s.TagIDs("session.s1.log"); len(got) != 2 {
		t.Errorf("TagIDs(session.s1.log) = %v", got)
	}
}

func TestStatusCreated(t *testing.T) {
	s := startServer(t, Options{StatusCreated: true})
	c := newClient(t, getPKI(t).client)
	if r := mustPost(t, c, s, "test.log", `{"uid":"x"}`); r.code != 201 {
		t.Errorf("status %d, want 201", r.code)
	}
	if r := mustPost(t, c, s, "test.log", `{"time":5}`); r.code != 400 {
		t.Errorf("bad time in 201 mode: status %d, want 400", r.code)
	}
}

func TestPoisonRule(t *testing.T) {
	s := startServer(t, Options{Faults: Faults{Poison: []Poison{{Field: "event", Value: "bad.event"}, {Field: "ei", Value: "13"}}}})
	c := newClient(t, getPKI(t).client)
	r := mustPost(t, c, s, "test.log", `[{"uid":"1","event":"ok"},{"uid":"2","event":"bad.event"}]`)
	if r.code != 400 || !strings.Contains(r.body, `poison record: field "event" equals "bad.event"`) {
		t.Errorf("poison array: %d %q, want 400 naming the rule", r.code, r.body)
	}
	if r := mustPost(t, c, s, "session.s.log", `{"ei":13}`); r.code != 400 {
		t.Errorf("poison by number: status %d, want 400", r.code)
	}
	if r := mustPost(t, c, s, "test.log", `{"uid":"3","event":"ok","ei":130}`); r.code != 200 {
		t.Errorf("clean record: status %d, want 200", r.code)
	}
	if st := s.Stats(); st.StoredTotal != 1 || st.Rejected != 2 {
		t.Errorf("stored=%d rejected=%d, want 1 and 2", st.StoredTotal, st.Rejected)
	}
	// The rule can be lifted at runtime.
	if err := s.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	if r := mustPost(t, c, s, "session.s.log", `{"ei":13}`); r.code != 200 {
		t.Errorf("after lifting the rule: status %d, want 200", r.code)
	}
}

func TestJSONLOutput(t *testing.T) {
	path := t.TempDir() + "/out.jsonl"
	s := startServer(t, Options{JSONLPath: path})
	c := newClient(t, getPKI(t).client)
	mustPost(t, c, s, "test.log", `[{"uid":"a","time":"2024-01-02T03:04:05.123Z","n":1},{"uid":"b","time":"2024-01-02T03:04:06Z"}]`)
	mustPost(t, c, s, "session.x.log", `{"ei":0,"sid":"x","time":"2024-01-02T03:04:07Z"}`)
	mustPost(t, c, s, "test.log", `{"time":"bad"}`) // refused: not written
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 3 {
		t.Fatalf("JSONL has %d lines, want 3:\n%s", len(lines), data)
	}
	type line struct {
		Tag    string         `json:"tag"`
		Time   string         `json:"time"`
		Record map[string]any `json:"record"`
	}
	var got []line
	for _, l := range lines {
		var v line
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, v)
	}
	if got[0].Tag != "test.log" || got[0].Time != "2024-01-02T03:04:05Z" || got[0].Record["uid"] != "a" || got[0].Record["n"] != 1.0 {
		t.Errorf("line 1 = %+v", got[0])
	}
	if _, ok := got[0].Record["time"]; ok {
		t.Errorf("line 1 still has the time key: %+v", got[0].Record)
	}
	if got[2].Tag != "session.x.log" || got[2].Record["sid"] != "x" {
		t.Errorf("line 3 = %+v", got[2])
	}
}

// TestKeepTimeKey: with <parse> keep_time_key true the record keeps its
// `time` (still read as the event time), as real Fluentd stores it.
func TestKeepTimeKey(t *testing.T) {
	s := startServer(t, Options{KeepRecords: true, KeepTimeKey: true})
	c := newClient(t, getPKI(t).client)
	body := `[{"uid":"a", "time":"2024-01-02T03:04:05.461Z","user":"alice"}]`
	if r := mustPost(t, c, s, "test.log", body); r.code != 200 {
		t.Fatalf("status %d %q", r.code, r.body)
	}
	recs := s.Records("test.log")
	if len(recs) != 1 {
		t.Fatalf("stored %d records, want 1", len(recs))
	}
	if want := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC); !recs[0].Time.Equal(want) {
		t.Errorf("time = %v, want %v", recs[0].Time, want)
	}
	if got := string(recs[0].JSON); got != `{"uid":"a","time":"2024-01-02T03:04:05.461Z","user":"alice"}` {
		t.Errorf("stored record = %s, want it with its time", got)
	}
}

// TestKeepTimeKeyFromConf reads keep_time_key from in_http's <parse> only.
func TestKeepTimeKeyFromConf(t *testing.T) {
	for _, c := range []struct {
		name, conf string
		want       bool
	}{
		{"in_http keeps", "<source>\n  @type http\n  <parse>\n    @type json\n    keep_time_key true # keep it\n  </parse>\n</source>\n", true},
		{"default", "<source>\n  @type http\n  <parse>\n    @type json\n  </parse>\n</source>\n", false},
		{"false", "<source>\n  @type http\n  <parse>\n    keep_time_key false\n  </parse>\n</source>\n", false},
		{"commented out", "<source>\n  @type http\n  <parse>\n    # keep_time_key true\n  </parse>\n</source>\n", false},
		{"another source", "<source>\n  @type forward\n  <parse>\n    keep_time_key true\n  </parse>\n</source>\n", false},
	} {
		if got := KeepTimeKey([]byte(c.conf)); got != c.want {
			t.Errorf("%s: KeepTimeKey = %v, want %v", c.name, got, c.want)
		}
	}
}
