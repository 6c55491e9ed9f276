package reader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// pagedLog is a search source over fixed events: pages of at most limit
// events (or short, if short is set), keyed by the index of the page's
// first event. onCall, if set, runs before each answer.
type pagedLog struct {
	events []*auditlogpb.EventUnstructured // in time order
	short  int                             // if > 0, pages hold at most this many events, whatever the limit

	mu     sync.Mutex
	calls  []string // "from key" of each call
	onCall func(from time.Time, key string)
}

func newPagedLog(t0 time.Time, n int, every time.Duration) *pagedLog {
	l := &pagedLog{}
	for i := range n {
		l.events = append(l.events, &auditlogpb.EventUnstructured{
			Type: "user.login", Id: fmt.Sprintf("ev-%05d", i), Time: timestamppb.New(t0.Add(time.Duration(i) * every)),
		})
	}
	return l
}

func (l *pagedLog) SearchUnstructuredEvents(ctx context.Context, from, to time.Time, _ string, _ []string, limit int, _ types.EventOrder, key string) ([]*auditlogpb.EventUnstructured, string, error) {
	l.mu.Lock()
	l.calls = append(l.calls, from.Format(time.RFC3339)+" "+key)
	hook := l.onCall
	l.mu.Unlock()
	if hook != nil {
		hook(from, key)
	}
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	var in []*auditlogpb.EventUnstructured
	for _, e := range l.events {
		if at := e.GetTime().AsTime(); !at.Before(from) && !at.After(to) {
			in = append(in, e)
		}
	}
	start := 0
	if key != "" {
		var err error
		if start, err = strconv.Atoi(key); err != nil {
			return nil, "", fmt.Errorf("bad key %q", key)
		}
	}
	n := limit
	if l.short > 0 {
		n = min(n, l.short)
	}
	end := min(start+n, len(in))
	next := ""
	if end < len(in) || end-start == n {
		next = strconv.Itoa(end)
	}
	return in[start:end], next, nil
}

func (l *pagedLog) callCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

func testSearcher(t *testing.T, src PageSource, out Outlet, st *position.Store, start time.Time, pageSize int) *Searcher {
	t.Helper()
	pos, err := st.Paging(start, "")
	if err != nil {
		t.Fatal(err)
	}
	return &Searcher{
		Src: src, Audit: &Audit{Out: out, Prog: &fakeProgress{}}, Pos: pos, Prog: &fakeProgress{},
		Start: start, Window: 24 * time.Hour, PageSize: pageSize,
	}
}

func wantAll(t *testing.T, l *pagedLog, got []string) {
	t.Helper()
	want := make([]string, len(l.events))
	for i, e := range l.events {
		want[i] = e.GetId()
	}
	wantOnce(t, got, want)
}

// TestSearchFetchesTheNextPageWhilePublishing: the first page's events are
// not acknowledged until the source has been asked for the second page, so
// a reader that waits for a page's PubAcks before asking for the next one
// never finishes.
func TestSearchFetchesTheNextPageWhilePublishing(t *testing.T) {
	now := time.Now().UTC()
	t0 := now.Add(-time.Hour)
	l := newPagedLog(t0, 50, time.Second)
	secondAsked := make(chan struct{})
	var once sync.Once
	l.onCall = func(_ time.Time, key string) {
		if key == "10" {
			once.Do(func() { close(secondAsked) })
		}
	}
	pub := &fakeOutlet{}
	pub.ack = func(_ bus.Event, done func(error)) {
		go func() {
			<-secondAsked
			done(nil)
		}()
	}
	s := testSearcher(t, l, pub, position.Memory(), t0, 10)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.Pass(ctx, now); err != nil {
		t.Fatalf("pass: %v (the next page was not read while the first was published)", err)
	}
	wantAll(t, l, pub.ids())
}

// TestSearchReadsAtMostThreePagesOfAWindow: with publishing stuck, the
// reader holds the page being published, one waiting and one fetched.
func TestSearchReadsAtMostThreePagesOfAWindow(t *testing.T) {
	now := time.Now().UTC()
	t0 := now.Add(-time.Hour)
	l := newPagedLog(t0, 100, time.Second)
	third := make(chan struct{})
	l.onCall = func(_ time.Time, key string) {
		if key == "20" {
			close(third)
		}
	}
	pub := &fakeOutlet{ack: func(bus.Event, func(error)) {}} // never acknowledged
	s := testSearcher(t, l, pub, position.Memory(), t0, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Pass(ctx, now) }()
	select {
	case <-third:
	case err := <-done:
		t.Fatalf("pass ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the third page was never asked for")
	}
	// The fetcher is now blocked handing over the third page; anything
	// it fetched beyond would be asked for before cancel takes effect.
	calls := l.callCount()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("pass: %v; want canceled", err)
	}
	if calls > 3 || l.callCount() > 3 {
		t.Errorf("%d pages fetched while the first one was unacknowledged; want at most 3", l.callCount())
	}
	if n := len(pub.ids()); n != 10 {
		t.Errorf("%d events handed on; want the first page's 10", n)
	}
}

// TestSearchShortPagesLoseNothing: a server that answers with fewer events
// than asked (as Teleport does at 1 MiB) is paged through by its keys.
func TestSearchShortPagesLoseNothing(t *testing.T) {
	now := time.Now().UTC()
	t0 := now.Add(-3 * time.Hour)
	l := newPagedLog(t0, 500, 10*time.Second)
	l.short = 7
	pub := &fakeOutlet{}
	s := testSearcher(t, l, pub, position.Memory(), t0, 10_000)
	if err := s.Pass(t.Context(), now); err != nil {
		t.Fatalf("pass: %v", err)
	}
	wantAll(t, l, pub.ids())
	if n := l.callCount(); n < 500/7 {
		t.Errorf("%d calls; the source served pages of 7", n)
	}
}

// stuckLog answers every page with its own start key.
type stuckLog struct{ calls atomic.Int64 }

func (s *stuckLog) SearchUnstructuredEvents(_ context.Context, from, _ time.Time, _ string, _ []string, _ int, _ types.EventOrder, key string) ([]*auditlogpb.EventUnstructured, string, error) {
	s.calls.Add(1)
	return nil, "same-key", nil
}

func TestSearchStuckKeyIsAnError(t *testing.T) {
	now := time.Now().UTC()
	src := &stuckLog{}
	pub := &fakeOutlet{}
	s := testSearcher(t, src, pub, position.Memory(), now.Add(-time.Hour), 100)
	err := s.Pass(t.Context(), now)
	if !errors.Is(err, errKeyStuck) {
		t.Fatalf("pass: %v; want %v", err, errKeyStuck)
	}
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d calls; want 2 (the first, then the one that returned its own key)", n)
	}
}

// TestSearchWindowsInOrder: a backlog of three days is read window after
// window, each event once (the one at a window's end only in the next),
// the saved position ends at the live window, and a second pass reads
// nothing again.
func TestSearchWindowsInOrder(t *testing.T) {
	now := time.Now().UTC()
	t0 := now.Add(-72*time.Hour + time.Minute)
	l := newPagedLog(t0, 720, 6*time.Minute) // 3 days; events at both ends of windows
	pub := &fakeOutlet{}
	st := position.Memory()
	s := testSearcher(t, l, pub, st, t0, 50)
	if err := s.Pass(t.Context(), now); err != nil {
		t.Fatalf("pass: %v", err)
	}
	wantAll(t, l, pub.ids())
	var saved position.Search
	if _, err := st.Get(position.KeySearch, &saved); err != nil {
		t.Fatal(err)
	}
	if live := t0.Add(48 * time.Hour); !saved.WindowStart.Equal(live) || saved.LastID != "ev-00719" {
		t.Errorf("saved %+v; want the live window (from %s) after its last event", saved, live)
	}
	before := len(pub.ids())
	if err := s.Pass(t.Context(), now.Add(time.Second)); err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if n := len(pub.ids()) - before; n != 0 {
		t.Errorf("the second pass handed on %d events again", n)
	}
}

// TestSearchStateOfTheCurrentVersionLoads: a position.Search written by the
// version before pipelining resumes where it says.
func TestSearchStateOfTheCurrentVersionLoads(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	t0 := now.Add(-72 * time.Hour)
	l := newPagedLog(t0, 720, 6*time.Minute)
	day2 := t0.Add(24 * time.Hour).Format(time.RFC3339Nano)
	for _, tc := range []struct {
		name string
		raw  string
		want [][2]int // ranges of event indexes still to read
	}{
		// As the version before this one wrote it: the second day's
		// window, 30 events into it (page key "30", last id the 36th).
		{"older", fmt.Sprintf(`{"window_start":%q,"cursor":"30","last_id":"ev-00275"}`, day2), [][2]int{{276, 720}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := position.Memory()
			var ss position.Search
			if err := json.Unmarshal([]byte(tc.raw), &ss); err != nil {
				t.Fatal(err)
			}
			if err := st.Put(t.Context(), position.KeySearch, ss); err != nil {
				t.Fatal(err)
			}
			pub := &fakeOutlet{}
			s := testSearcher(t, l, pub, st, t0, 10)
			if err := s.Pass(t.Context(), now); err != nil {
				t.Fatalf("pass: %v", err)
			}
			got := pub.ids()
			slices.Sort(got)
			var want []string
			for _, r := range tc.want {
				for _, e := range l.events[r[0]:r[1]] {
					want = append(want, e.GetId())
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("resumed with %d events (first %v); want the %d after the saved position", len(got), got[:min(1, len(got))], len(want))
			}
		})
	}
}
