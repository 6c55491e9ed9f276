package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
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

// published records what a searcher handed on, acknowledging each event
// at once (or through ack, when set).
type published struct {
	mu  sync.Mutex
	ids []string
	ack func(id string, done func(error))
}

func (p *published) handle(_ context.Context, e teleport.Event, tr *tracker[string], pos string) error {
	done := tr.published(pos)
	p.mu.Lock()
	p.ids = append(p.ids, e.ID)
	ack := p.ack
	p.mu.Unlock()
	if ack != nil {
		ack(e.ID, done)
		return nil
	}
	done(nil)
	return nil
}

func (p *published) got() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids)
}

func testSearcher(t *testing.T, src pageSource, h auditHandler, st *state, start time.Time, pageSize int) *searcher {
	t.Helper()
	pos, err := loadSearchPositions(st, start, "")
	if err != nil {
		t.Fatal(err)
	}
	return &searcher{
		src: src, handle: h, pos: pos, prog: newProgress(zerolog.Nop(), newMetrics(nil)),
		start: start, window: 24 * time.Hour, pageSize: pageSize,
	}
}

func memState(t *testing.T) *state {
	t.Helper()
	st, err := newState(t.Context(), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func wantAll(t *testing.T, l *pagedLog, got []string) {
	t.Helper()
	want := make([]string, len(l.events))
	for i, e := range l.events {
		want[i] = e.GetId()
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("handled %d events (%d distinct of %d); want each once", len(got), len(slices.Compact(slices.Clone(got))), len(want))
	}
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
	pub := &published{}
	pub.ack = func(_ string, done func(error)) {
		go func() {
			<-secondAsked
			done(nil)
		}()
	}
	s := testSearcher(t, l, pub.handle, memState(t), t0, 10)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.pass(ctx, now); err != nil {
		t.Fatalf("pass: %v (the next page was not read while the first was published)", err)
	}
	wantAll(t, l, pub.got())
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
	pub := &published{ack: func(string, func(error)) {}} // never acknowledged
	s := testSearcher(t, l, pub.handle, memState(t), t0, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.pass(ctx, now) }()
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
	if n := len(pub.got()); n != 10 {
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
	pub := &published{}
	s := testSearcher(t, l, pub.handle, memState(t), t0, 10_000)
	if err := s.pass(t.Context(), now); err != nil {
		t.Fatalf("pass: %v", err)
	}
	wantAll(t, l, pub.got())
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
	pub := &published{}
	s := testSearcher(t, src, pub.handle, memState(t), now.Add(-time.Hour), 100)
	err := s.pass(t.Context(), now)
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
	pub := &published{}
	st := memState(t)
	s := testSearcher(t, l, pub.handle, st, t0, 50)
	if err := s.pass(t.Context(), now); err != nil {
		t.Fatalf("pass: %v", err)
	}
	wantAll(t, l, pub.got())
	var saved searchState
	if _, err := st.get(keySearch, &saved); err != nil {
		t.Fatal(err)
	}
	if live := t0.Add(48 * time.Hour); !saved.WindowStart.Equal(live) || saved.LastID != "ev-00719" {
		t.Errorf("saved %+v; want the live window (from %s) after its last event", saved, live)
	}
	before := len(pub.got())
	if err := s.pass(t.Context(), now.Add(time.Second)); err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if n := len(pub.got()) - before; n != 0 {
		t.Errorf("the second pass handed on %d events again", n)
	}
}

// TestSearchStateOfTheCurrentVersionLoads: a searchState written by the
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
			st := memState(t)
			var ss searchState
			if err := json.Unmarshal([]byte(tc.raw), &ss); err != nil {
				t.Fatal(err)
			}
			if err := st.put(t.Context(), keySearch, ss); err != nil {
				t.Fatal(err)
			}
			pub := &published{}
			s := testSearcher(t, l, pub.handle, st, t0, 10)
			if err := s.pass(t.Context(), now); err != nil {
				t.Fatalf("pass: %v", err)
			}
			got := pub.got()
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

// TestOlderTOMLBatchIsNotThePageSize: an older teleport-event-handler.toml
// with batch = 20 loads, ingest says once that it pages with
// ingest.page-size, and pages at the server's maximum.
func TestOlderTOMLBatchIsNotThePageSize(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 22, Events: 2000, From: now.Add(-30 * time.Hour), To: now, Older: true})
	path := filepath.Join(e.dir, "teleport-event-handler.toml")
	toml := fmt.Sprintf(`storage = %q
batch = 20
timeout = "200ms"
start-time = %q
exit-on-last-event = true

[teleport]
addr = %q
identity = %q

[nats]
listen = "127.0.0.1:0"
`, e.cfg.Storage, e.cfg.StartTime.Format(time.RFC3339), e.sim.Addr(), e.cfg.Teleport.Identity)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFile(path, config.Ingest)
	if err != nil {
		t.Fatalf("load the older TOML: %v", err)
	}
	e.cfg = cfg
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	const note = "batch is not the page size"
	if n := strings.Count(logs.String(), note); n != 1 {
		t.Errorf("%q logged %d times; want once:\n%s", note, n, logs)
	}
	if !strings.Contains(logs.String(), `"page_size":10000`) {
		t.Errorf("the log does not give the page size 10000:\n%s", logs)
	}
	// Two windows of 2,000 events in all: a page or two each at 10,000
	// (and the passes after), where batch = 20 would take over 100.
	if n := e.sim.Stats().Searches; n > 12 {
		t.Errorf("%d searches for 2000 events; pages were not of 10000", n)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}

// TestSearchOneMiBPagesLoseNothing: a file-log Teleport cuts pages at
// 1 MiB (about 2,700 of the double's events), far below the 10,000 asked for, and sends events over 1 MB
// alone; every event arrives once.
func TestSearchOneMiBPagesLoseNothing(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 23, Events: 6_000, HugeEvents: 2, From: now.Add(-20 * time.Hour), To: now, Older: true})
	e.cfg.Ingest.PageSize = 0 // the default: the server's maximum
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if err := Run(ctx, e.cfg, zerolog.New(logs)); err != nil || !strings.Contains(logs.String(), "caught up and everything acknowledged") {
		t.Fatalf("Run: %v; did not catch up:\n%s", err, logs)
	}
	if n := e.sim.Stats().Searches; n < 4 {
		t.Errorf("%d searches for 6000 events; the 1 MiB cap should have cut pages", n)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}
