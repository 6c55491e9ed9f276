package ingest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

func TestFitTrimsLargestStringFields(t *testing.T) {
	body, err := json.Marshal(map[string]any{
		"event": "db.session.query", "uid": "u-1", "db_query": strings.Repeat("SELECT 1; ", 200_000),
		"db_query_parameters": []any{strings.Repeat("p", 300_000)}, "user": "alice",
	})
	if err != nil {
		t.Fatal(err)
	}
	e := bus.Event{ID: "u-1", Type: "db.session.query", Time: time.Now(), JSON: body}
	const limit = 1 << 20
	got, err := fit(e, limit)
	if err != nil {
		t.Fatalf("fit: %v", err)
	}
	if !got.Trimmed || msgSize(got) > limit {
		t.Fatalf("trimmed=%v size=%d; want trimmed and at most %d", got.Trimmed, msgSize(got), limit)
	}
	var doc map[string]any
	if err := json.Unmarshal(got.JSON, &doc); err != nil {
		t.Fatalf("trimmed event is not JSON: %v", err)
	}
	if doc["user"] != "alice" || doc["event"] != "db.session.query" || got.MsgID() != "u-1" {
		t.Errorf("small fields or the id changed: %v, id %s", doc["user"], got.MsgID())
	}
	if q, _ := doc["db_query"].(string); !strings.HasSuffix(q, trimNote) {
		t.Errorf("the largest field does not end with %q", trimNote)
	}
}

func TestFitKeepsSmallEventsAndFallsBackToScalars(t *testing.T) {
	small := bus.Event{ID: "a", Type: "user.login", JSON: []byte(`{"event":"user.login"}`)}
	if got, err := fit(small, 1<<20); err != nil || got.Trimmed || string(got.JSON) != string(small.JSON) {
		t.Errorf("a small event changed: %+v, %v", got, err)
	}
	nums := make([]int, 700_000)
	body, err := json.Marshal(map[string]any{"event": "x", "n": nums})
	if err != nil {
		t.Fatal(err)
	}
	got, err := fit(bus.Event{Type: "x", JSON: body}, 1<<20)
	if err != nil || !got.Trimmed || msgSize(got) > 1<<20 {
		t.Fatalf("fit of an event made of numbers: %v, trimmed %v, size %d", err, got.Trimmed, msgSize(got))
	}
	if !strings.Contains(string(got.JSON), `"event":"x"`) {
		t.Errorf("scalar fields lost: %s", got.JSON)
	}
	if !strings.HasPrefix(got.MsgID(), "sha256:") {
		t.Errorf("an event without id keeps the dedup key of its full body; got %q", got.MsgID())
	}
}

func TestTrackerSavesOnlyAcknowledgedPrefix(t *testing.T) {
	tr := newTracker("start")
	a := tr.published("a")
	b := tr.published("b")
	tr.skipped("c")
	if pos, _, _, err := tr.position(); err != nil || pos != "start" {
		t.Fatalf("before any ack: %q, %v", pos, err)
	}
	a(nil)
	if pos, _, _, err := tr.position(); err != nil || pos != "a" {
		t.Fatalf("after a: %q, %v", pos, err)
	}
	b(nil) // c was skipped after b: it is covered too
	if pos, _, _, err := tr.position(); err != nil || pos != "c" {
		t.Fatalf("after b: %q, %v", pos, err)
	}
	d := tr.published("d")
	e := tr.published("e")
	d(errBus)
	e(nil)
	if pos, _, _, err := tr.position(); pos != "c" || err == nil {
		t.Fatalf("after a failed publish: %q, %v; want c and the error", pos, err)
	}
}

// TestTrackerFloor: the floor saved with a position is the stream's
// highest acknowledged sequence when the oldest event after the position
// was published, so every event after the position that reached the
// stream is stored above it; with nothing outstanding it is the current
// one, and a failed publish keeps its own.
func TestTrackerFloor(t *testing.T) {
	acked := uint64(100)
	tr := newTracker("start").withFloor(func() uint64 { return acked }, nil)
	if _, f, _, _ := tr.position(); f != 100 {
		t.Fatalf("nothing published: floor %d, want 100 (the stream now)", f)
	}
	a := tr.published("a") // floor 100: stored after 100 if at all
	acked = 150            // other publishers' messages were acknowledged
	b := tr.published("b") // floor 150
	acked = 160
	c := tr.published("c") // floor 160
	if pos, f, _, _ := tr.position(); pos != "start" || f != 100 {
		t.Fatalf("a, b, c outstanding: %q floor %d, want start and 100", pos, f)
	}
	a(nil)
	if pos, f, _, _ := tr.position(); pos != "a" || f != 150 {
		t.Fatalf("after a: %q floor %d, want a and 150 (b's)", pos, f)
	}
	b(errBus)
	acked = 300
	c(nil) // after the failure: the position and the floor stay at b
	if pos, f, _, err := tr.position(); pos != "a" || f != 150 || err == nil {
		t.Fatalf("b failed: %q floor %d err %v, want a, 150 and the error", pos, f, err)
	}

	ok := newTracker("start").withFloor(func() uint64 { return acked }, nil)
	d := ok.published("d")
	acked = 400
	d(nil)
	if pos, f, _, _ := ok.position(); pos != "d" || f != 400 {
		t.Fatalf("all acknowledged: %q floor %d, want d and 400 (the stream now)", pos, f)
	}
}
