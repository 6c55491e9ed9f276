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
