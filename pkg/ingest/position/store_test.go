package position

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestStoreSavesMarksBeforePositions: every write but a stream mark's
// runs the BeforeSave hook first, and a hook's error stops the write.
func TestStoreSavesMarksBeforePositions(t *testing.T) {
	ctx := context.Background()
	s := Memory()
	var hooked []string
	lost := errors.New("stream lost")
	var fail error
	s.BeforeSave(func(context.Context) error {
		hooked = append(hooked, "hook")
		return fail
	})
	if err := s.Put(ctx, PrefixMark+"AUDIT", 1); err != nil {
		t.Fatal(err)
	}
	if len(hooked) != 0 {
		t.Errorf("writing a mark ran the hook %d times; want none", len(hooked))
	}
	if err := s.Put(ctx, ChunkKey(time.Now(), "c"), Chunk{Chunk: "c"}); err != nil || len(hooked) != 1 {
		t.Fatalf("a position: %v, hook ran %d times; want once", err, len(hooked))
	}
	fail = lost
	if err := s.Put(ctx, KeySearch, Search{}); !errors.Is(err, lost) {
		t.Fatalf("Put with a failing hook: %v; want its error", err)
	}
	if _, ok := s.Raw(KeySearch); ok {
		t.Error("a position was written although the hook failed")
	}
}

// TestStartTimeIsFixedOnce: the first run fixes the start time (the one
// given, or now); later runs get it back, a different one is an error
// naming both and the way to an earlier one.
func TestStartTimeIsFixedOnce(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	given := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name              string
		stored, configure time.Time
		want              time.Time
		fromNow           bool
		err               string
	}{
		{name: "first run, none given", want: now, fromNow: true},
		{name: "first run, given", configure: given, want: given},
		{name: "later run, none given", stored: given, want: given},
		{name: "later run, the same", stored: given, configure: given, want: given},
		{name: "later run, an earlier one", stored: given, configure: given.AddDate(0, -1, 0), err: "ingest backfill --start-time 2025-12-01T00:00:00Z"},
		{name: "later run, a later one", stored: given, configure: given.AddDate(0, 1, 0), err: "a later start-time would unread what is read"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := Memory()
			if !c.stored.IsZero() {
				if err := s.Put(ctx, KeyStartTime, Start{StartTime: c.stored}); err != nil {
					t.Fatal(err)
				}
			}
			got, fromNow, err := s.FixStartTime(ctx, c.configure, now)
			if c.err != "" {
				if !errors.Is(err, ErrStartTimeChanged) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v; want ErrStartTimeChanged saying %q", err, c.err)
				}
				return
			}
			if err != nil || !got.Equal(c.want) || fromNow != c.fromNow {
				t.Fatalf("got %s (from now %v), %v; want %s (from now %v)", got, fromNow, err, c.want, c.fromNow)
			}
			var st Start
			if ok, err := s.Get(KeyStartTime, &st); !ok || err != nil || !st.StartTime.Equal(c.want) {
				t.Errorf("stored %s (%v, %v); want %s", st.StartTime, ok, err, c.want)
			}
		})
	}
}

// TestPagingSavesTheWindowPosition: the search position moves within a
// window, then to the next window when one is done.
func TestPagingSavesTheWindowPosition(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := Memory()
	p, err := s.Paging(start, "key-0")
	if err != nil {
		t.Fatal(err)
	}
	if p.Saved() {
		t.Fatal("a new position says it was saved")
	}
	w := p.Next(24 * time.Hour)
	if !w.Start.Equal(start) || !w.End.Equal(start.Add(24*time.Hour)) || w.Cursor != "key-0" {
		t.Fatalf("first window %+v; want the day from start at the given cursor", w)
	}
	floor := uint64(7)
	w.Cursor, w.LastID, w.Floor = "key-1", "ev-3", &floor
	if err := p.Save(ctx, w); err != nil {
		t.Fatal(err)
	}
	again, err := s.Paging(start.AddDate(0, 0, -9), "ignored")
	if err != nil {
		t.Fatal(err)
	}
	if w2 := again.Next(24 * time.Hour); !again.Saved() || w2.Cursor != "key-1" || w2.LastID != "ev-3" || *w2.Floor != 7 {
		t.Fatalf("reloaded %+v; want the saved position", w2)
	}
	w.Done = true
	if err := p.Save(ctx, w); err != nil {
		t.Fatal(err)
	}
	if n := p.Next(24 * time.Hour); !n.Start.Equal(start.Add(24*time.Hour)) || n.Cursor != "" || n.LastID != "" || *n.Floor != 7 {
		t.Errorf("after a done window: %+v; want the next day from its start, keeping the floor", n)
	}
}

// TestRecordingsPrune: finished recordings are removed a day after they
// ended (entries of older versions, without an end time, a week after
// they were first seen); unfinished ones stay whatever their age.
func TestRecordingsPrune(t *testing.T) {
	ctx := context.Background()
	now := time.Now().UTC()
	s := Memory()
	r := s.Recordings()
	for _, ss := range []Session{
		{SessionID: "done-25h", Done: true, Finished: now.Add(-25 * time.Hour)},
		{SessionID: "done-1h", Done: true, Finished: now.Add(-time.Hour)},
		{SessionID: "gave-up-30h", GaveUp: true, Finished: now.Add(-30 * time.Hour)},
		{SessionID: "running", Next: 12, FirstSeen: now.Add(-40 * 24 * time.Hour)},
		{SessionID: "legacy-done-8d", Done: true, FirstSeen: now.Add(-8 * 24 * time.Hour)},
		{SessionID: "legacy-done-2d", Done: true, FirstSeen: now.Add(-2 * 24 * time.Hour)},
	} {
		if err := r.Save(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	n, err := r.Prune(ctx, now)
	if err != nil || n != 3 {
		t.Fatalf("pruned %d, %v; want 3", n, err)
	}
	got := s.Keys(PrefixSession)
	slices.Sort(got)
	want := []string{SessionKey("done-1h"), SessionKey("legacy-done-2d"), SessionKey("running")}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("left %v; want %v", got, want)
	}
	if open, err := r.Unfinished(); err != nil || !slices.Equal(open, []string{"running"}) {
		t.Errorf("unfinished %v, %v; want [running]", open, err)
	}
	if added, err := r.Add(ctx, "done-1h", now, now); added || err != nil {
		t.Errorf("a recording seen before was added again (%v, %v)", added, err)
	}
}

// TestExportCloseKeepsTheTotals: closing a date sums its chunks into the
// date's entry and drops the chunk positions.
func TestExportCloseKeepsTheTotals(t *testing.T) {
	ctx := context.Background()
	d := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := Memory()
	x := s.Export()
	for i, n := range []int64{10, 0, 32} {
		if err := x.SaveChunk(ctx, d, Chunk{Chunk: string(rune('a' + i)), Done: true, Events: n}); err != nil {
			t.Fatal(err)
		}
	}
	if x.Closed(d) {
		t.Fatal("closed before Close")
	}
	if err := x.Close(ctx, d); err != nil {
		t.Fatal(err)
	}
	var got Date
	if _, err := s.Get(DateKey(d), &got); err != nil || !x.Closed(d) || got.Chunks != 3 || got.Events != 42 {
		t.Errorf("closed date %+v, %v; want 3 chunks, 42 events", got, err)
	}
	if keys := s.Keys(ChunkPrefix(d)); len(keys) != 0 {
		t.Errorf("chunk positions left: %v", keys)
	}
}
