package teleportsim

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
)

func TestFileLogIsTheOlderServersDefault(t *testing.T) {
	for _, tt := range []struct {
		opts Options
		want string
	}{
		{Options{}, "indexed"},
		{Options{Older: true}, "file-log"},
		{Options{Older: true, Search: SearchIndexed}, "indexed"},
		{Options{Search: SearchFileLog}, "file-log"},
	} {
		s := startSim(t, tt.opts)
		if got := s.Stats().Search; got != tt.want {
			t.Errorf("Options{Older: %v, Search: %v}: searches answered %q, want %q", tt.opts.Older, tt.opts.Search, got, tt.want)
		}
	}
	if _, err := Start(t.Context(), Options{Search: SearchFileLog + 1}); err == nil {
		t.Error("an unknown search mode was accepted")
	}
}

// TestFileLogPagesThroughEveryEvent: the file log returns what the index
// returns, in the same order, both ways, with the type filter, and sees
// straggler events added later.
func TestFileLogPagesThroughEveryEvent(t *testing.T) {
	opts := Options{Seed: 7, Events: 1500, Sessions: 40, From: baseTime, To: baseTime.Add(72 * time.Hour)}
	idx := startSim(t, opts)
	opts.Search = SearchFileLog
	fl := startSim(t, opts)
	idxClt, flClt := connect(t, idx), connect(t, fl)
	from, to := baseTime, baseTime.Add(72*time.Hour)
	for _, order := range []types.EventOrder{types.EventOrderAscending, types.EventOrderDescending} {
		want := ids(searchAll(t, idxClt, from, to, nil, 100, order))
		got := ids(searchAll(t, flClt, from, to, nil, 77, order))
		if len(want) != 1500 || !slices.Equal(got, want) {
			t.Fatalf("order %v: file log returned %d events, index %d; not the same events in the same order", order, len(got), len(want))
		}
	}
	typed := []string{"session.upload", "role.created"}
	w0, w1 := baseTime.Add(20*time.Hour), baseTime.Add(50*time.Hour)
	want := ids(searchAll(t, idxClt, w0, w1, typed, 500, types.EventOrderAscending))
	if got := ids(searchAll(t, flClt, w0, w1, typed, 9, types.EventOrderAscending)); len(want) == 0 || !slices.Equal(got, want) {
		t.Fatalf("window with types: file log %d events, index %d", len(got), len(want))
	}

	if _, err := fl.AddStraggler(baseTime.Add(24*time.Hour), 5); err != nil {
		t.Fatal(err)
	}
	if got := searchAll(t, flClt, from, to, nil, 1000, types.EventOrderAscending); !slices.Equal(ids(got), fl.AllEventIDs()) || len(got) != 1505 {
		t.Fatalf("after a straggler chunk the file log returned %d events, want the server's 1505 in order", len(got))
	}
}

// TestFileLogPageCostGrowsWithTheWindow: every call parses every line of
// the days from from−24h to to+24h, however small the page and wherever
// it starts; a day further away costs nothing.
func TestFileLogPageCostGrowsWithTheWindow(t *testing.T) {
	day := baseTime.Add(24 * time.Hour)
	var perCall []int64
	for _, n := range []int{1_000, 10_000} {
		// Events on one day, and as many again three days later.
		s := startSim(t, Options{Seed: 3, Events: n, From: day, To: day.Add(24 * time.Hour), Search: SearchFileLog})
		if _, err := s.AddStraggler(day.Add(72*time.Hour), n); err != nil {
			t.Fatal(err)
		}
		clt := connect(t, s)
		key := ""
		for page := range 3 {
			before := s.Stats().LinesParsed
			items, next, err := clt.SearchUnstructuredEvents(t.Context(), day, day.Add(12*time.Hour), "default", nil, 10, types.EventOrderAscending, key)
			if err != nil || len(items) != 10 || next == "" {
				t.Fatalf("%d events, page %d: %d events, next %q, %v", n, page, len(items), next, err)
			}
			parsed := s.Stats().LinesParsed - before
			if parsed != int64(n) {
				t.Errorf("%d events in the day, page %d of 10 events parsed %d lines; want every line of the day (%d) and none of the day three days on", n, page, parsed, n)
			}
			perCall = append(perCall, parsed)
			key = next
		}
		before := s.Stats().LinesParsed
		if _, _, err := clt.SearchUnstructuredEvents(t.Context(), day.Add(-72*time.Hour), day.Add(-48*time.Hour), "default", nil, 10, types.EventOrderAscending, ""); err != nil {
			t.Fatal(err)
		}
		if parsed := s.Stats().LinesParsed - before; parsed != 0 {
			t.Errorf("a window two days before the events parsed %d lines; want 0", parsed)
		}
	}
	if perCall[len(perCall)-1] != 10*perCall[0] {
		t.Errorf("lines parsed per page %v: a page of the same size should cost ten times as much with ten times the events", perCall)
	}
}

// TestFileLogPageCaps: a page holds at most limit events and at most
// MaxPageBytes of JSON (at least one event), a full page has a LastKey,
// a limit over MaxPageLimit is refused, and paging at the largest page
// returns every event once.
func TestFileLogPageCaps(t *testing.T) {
	from, to := baseTime, baseTime.Add(24*time.Hour)
	s := startSim(t, Options{Seed: 5, Events: 12_000, HugeEvents: 2, From: from, To: to, Search: SearchFileLog})
	clt := connect(t, s)

	items, next, err := clt.SearchUnstructuredEvents(t.Context(), from, to, "default", nil, 50, types.EventOrderAscending, "")
	if err != nil || len(items) != 50 || next == "" {
		t.Fatalf("limit 50: %d events, next %q, %v", len(items), next, err)
	}
	if _, _, err := clt.SearchUnstructuredEvents(t.Context(), from, to, "default", nil, MaxPageLimit+1, types.EventOrderAscending, ""); !trace.IsBadParameter(err) {
		t.Errorf("limit %d: %v; want a bad parameter error", MaxPageLimit+1, err)
	}

	// The byte cap, measured on the lines the server keeps.
	q, err := newQuery(from, to, nil, MaxPageLimit, types.EventOrderAscending, "")
	if err != nil {
		t.Fatal(err)
	}
	pages, seen := 0, 0
	for {
		hits, full, err := s.st.files.search(t.Context(), s.st, q)
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, h := range hits {
			line, err := s.st.line(h)
			if err != nil {
				t.Fatal(err)
			}
			size += len(line)
		}
		if len(hits) > MaxPageLimit || len(hits) > 1 && size > MaxPageBytes {
			t.Fatalf("page %d: %d events, %d bytes of JSON; caps are %d events and %d bytes", pages, len(hits), size, MaxPageLimit, MaxPageBytes)
		}
		seen += len(hits)
		pages++
		if !full {
			break
		}
		if len(hits) == 0 {
			t.Fatal("a full page without events")
		}
		q.startKey = encodeKey(hits[len(hits)-1])
	}
	if seen != 12_000 || pages < 12_000*400/MaxPageBytes {
		t.Errorf("paging at the largest page: %d events in %d pages; want 12000 events in pages cut at 1 MiB", seen, pages)
	}

	// The same over gRPC: pages shorter than asked, with a LastKey, and
	// every event once.
	var got []string
	key, short := "", 0
	for {
		items, next, err := clt.SearchUnstructuredEvents(t.Context(), from, to, "default", nil, MaxPageLimit, types.EventOrderAscending, key)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(items)...)
		if next == "" {
			break
		}
		if len(items) < MaxPageLimit {
			short++
		}
		key = next
	}
	if !slices.Equal(got, s.AllEventIDs()) {
		t.Fatalf("paging at %d returned %d events, not the server's %d in order", MaxPageLimit, len(got), len(s.AllEventIDs()))
	}
	if short == 0 {
		t.Error("no page was cut by the 1 MiB cap")
	}
}

// BenchmarkFileLogPage measures one page of 20 events from the file log as
// the day grows: the cost is the day's, not the page's.
func BenchmarkFileLogPage(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			opts, err := Options{Seed: 1, Events: n, From: baseTime, To: baseTime.Add(24 * time.Hour), Search: SearchFileLog}.withDefaults()
			if err != nil {
				b.Fatal(err)
			}
			st := generate(opts)
			if st.files, err = buildFileLog(b.Context(), st); err != nil {
				b.Fatal(err)
			}
			q, err := newQuery(baseTime, baseTime.Add(24*time.Hour), nil, 20, types.EventOrderAscending, "")
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if hits, _, err := st.files.search(b.Context(), st, q); err != nil || len(hits) != 20 {
					b.Fatalf("%d hits, %v", len(hits), err)
				}
			}
		})
	}
}
