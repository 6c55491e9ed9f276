package sink

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func item(url string, n int) Item {
	return Item{URL: url, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

func sizes(bs []*Batch) string {
	var out []string
	for _, b := range bs {
		out = append(out, fmt.Sprintf("%s:%d", b.URL, len(b.Items)))
	}
	return strings.Join(out, ",")
}

func TestBatcherFullBatches(t *testing.T) {
	b := &Batcher{MaxEvents: 3, MaxBytes: 1 << 20, Wait: time.Second}
	var ready []*Batch
	for i := range 7 {
		ready = append(ready, b.Add(item("a", i))...)
	}
	if got := sizes(ready); got != "a:3,a:3" {
		t.Fatalf("ready = %s", got)
	}
	if b.Len() != 1 {
		t.Fatalf("open items = %d, want 1", b.Len())
	}
	if got := string(ready[1].Items[0].Data); got != `{"n":3}` {
		t.Fatalf("order broken: second batch starts with %s", got)
	}
}

func TestBatcherPerURL(t *testing.T) {
	b := &Batcher{MaxEvents: 2, Wait: time.Second}
	var ready []*Batch
	for i, u := range []string{"a", "b", "a", "c", "b"} {
		ready = append(ready, b.Add(item(u, i))...)
	}
	if got := sizes(ready); got != "a:2,b:2" {
		t.Fatalf("ready = %s", got)
	}
	if got := sizes(b.Flush()); got != "c:1" {
		t.Fatalf("flush = %s", got)
	}
	if b.Len() != 0 {
		t.Fatal("flush left items")
	}
}

func TestBatcherBytes(t *testing.T) {
	// Each {"n":d} is 7 bytes plus a separator: 3 fit in 24 bytes.
	b := &Batcher{MaxEvents: 100, MaxBytes: 20, Wait: time.Second}
	var ready []*Batch
	for i := range 5 {
		ready = append(ready, b.Add(item("a", i))...)
	}
	if got := sizes(ready); got != "a:2,a:2" {
		t.Fatalf("ready = %s", got)
	}
	// One record larger than the limit travels alone.
	big := Item{URL: "a", Data: json.RawMessage(`{"data":"` + strings.Repeat("x", 100) + `"}`)}
	if got := sizes(b.Add(big)); got != "a:1,a:1" {
		t.Fatalf("big record: %s", got)
	}
}

func TestBatcherWait(t *testing.T) {
	t0 := time.Unix(100, 0)
	now := t0
	b := &Batcher{MaxEvents: 100, Wait: 200 * time.Millisecond, Clock: func() time.Time { return now }}
	b.Add(item("a", 1))
	now = t0.Add(100 * time.Millisecond)
	b.Add(item("b", 1))
	at, ok := b.Next()
	if !ok || !at.Equal(t0.Add(200*time.Millisecond)) {
		t.Fatalf("next = %v %v", at, ok)
	}
	if got := b.Due(t0.Add(199 * time.Millisecond)); len(got) != 0 {
		t.Fatalf("due early: %s", sizes(got))
	}
	if got := sizes(b.Due(t0.Add(200 * time.Millisecond))); got != "a:1" {
		t.Fatalf("due = %s", got)
	}
	if got := sizes(b.Due(t0.Add(300 * time.Millisecond))); got != "b:1" {
		t.Fatalf("due = %s", got)
	}
	if _, ok := b.Next(); ok {
		t.Fatal("next with nothing open")
	}
}

// TestBatcherWaitStartsAtOpening feeds items that were fetched long ago,
// as happens when they queued behind busy request slots: the batch opened
// for them still gets its full wait to fill, and the clock is read once per
// batch, not once per item.
func TestBatcherWaitStartsAtOpening(t *testing.T) {
	t0 := time.Unix(100, 0)
	reads := 0
	b := &Batcher{MaxEvents: 100, Wait: 20 * time.Millisecond, Clock: func() time.Time { reads++; return t0 }}
	var ready []*Batch
	for i := range 250 {
		it := item("a", i)
		it.Received = t0.Add(-time.Minute)
		ready = append(ready, b.Add(it)...)
		ready = append(ready, b.Due(t0)...)
	}
	if got := sizes(ready); got != "a:100,a:100" {
		t.Fatalf("ready = %s, want two full batches", got)
	}
	if at, ok := b.Next(); !ok || !at.Equal(t0.Add(20*time.Millisecond)) {
		t.Fatalf("third batch due at %v (%v), want 20ms after it opened", at, ok)
	}
	if reads != 3 {
		t.Errorf("clock read %d times for 3 batches", reads)
	}
}

func TestBatchRecordsUnchanged(t *testing.T) {
	b := &Batch{Items: []Item{item("a", 1), item("a", 2)}}
	r := b.Records()
	if len(r) != 2 || string(r[0]) != `{"n":1}` || string(r[1]) != `{"n":2}` {
		t.Fatalf("records = %s", r)
	}
}

func TestSourcesFilters(t *testing.T) {
	cfg := newTestConfig()
	cfg.Sink.FilterSubjects = []string{"audit.user.>", "audit.session.upload"}
	srcs, err := Sources(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(srcs) != 1 || srcs[0].Session || strings.Join(srcs[0].Filters, " ") != "audit.user.> audit.session.upload" {
		t.Fatalf("sources = %+v", srcs)
	}
	cfg.Sink.FilterSubjects = []string{"audit.user.>", "session.>"}
	if srcs, err = Sources(cfg); err != nil || len(srcs) != 2 || srcs[1].Filters != nil {
		t.Fatalf("sources = %+v, %v", srcs, err)
	}
	cfg.Sink.FilterSubjects = []string{"deadletter.>"}
	if _, err := Sources(cfg); err == nil || !strings.Contains(err.Error(), "deadletter.>") {
		t.Fatalf("err = %v", err)
	}
	cfg.Sink.FilterSubjects = nil
	cfg.Fluentd.SessionURL = ""
	if srcs, err = Sources(cfg); err != nil || len(srcs) != 1 || srcs[0].Session {
		t.Fatalf("without session-url: %+v, %v", srcs, err)
	}
}
