package reader

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/internalutils/stream"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// exportLog is a bulk export source over fixed events: per date, chunks of
// events whose cursor is their index in the chunk. A chunk named in cut
// breaks after that many events on its first read, with Unavailable (a
// stream cut that Teleport's clients retry).
type exportLog struct {
	chunks map[string]map[string][]teleport.Event // date → chunk → events
	cut    map[string]int
	// unsupported: the server lacks the export API.
	unsupported bool

	mu    sync.Mutex
	reads map[string]int // chunk → how many times it was read
}

// newExportLog makes chunksPerDay chunks of perChunk events for each date
// from start to now; every event is of type user.login except the first
// of each chunk, a session.upload of session "s-<date>-<chunk>".
func newExportLog(start, now time.Time, chunksPerDay, perChunk int) *exportLog {
	l := &exportLog{chunks: map[string]map[string][]teleport.Event{}, cut: map[string]int{}, reads: map[string]int{}}
	for _, d := range datesBetween(start, now) {
		day := position.Day(d)
		l.chunks[day] = map[string][]teleport.Event{}
		for c := range chunksPerDay {
			name := fmt.Sprintf("c%d", c)
			for i := range perChunk {
				e := teleport.Event{ID: fmt.Sprintf("%s-%s-%03d", day, name, i), Type: "user.login", Time: d.Add(time.Duration(c*perChunk+i) * time.Second), JSON: []byte(`{}`)}
				if i == 0 {
					e.Type, e.SID = sessionUploadType, "s-"+day+"-"+name
				}
				l.chunks[day][name] = append(l.chunks[day][name], e)
			}
		}
	}
	return l
}

func (l *exportLog) GetEventExportChunks(_ context.Context, req *auditlogpb.GetEventExportChunksRequest) stream.Stream[*auditlogpb.EventExportChunk] {
	if l.unsupported {
		return stream.Fail[*auditlogpb.EventExportChunk](status.Error(codes.Unimplemented, "unknown method GetEventExportChunks"))
	}
	var out []*auditlogpb.EventExportChunk
	for c := range l.chunks[position.Day(req.GetDate().AsTime())] {
		out = append(out, &auditlogpb.EventExportChunk{Chunk: c})
	}
	return stream.Slice(out)
}

func (l *exportLog) ExportUnstructuredEvents(_ context.Context, req *auditlogpb.ExportUnstructuredEventsRequest) stream.Stream[teleport.ExportedEvent] {
	events := l.chunks[position.Day(req.GetDate().AsTime())][req.GetChunk()]
	from := 0
	if c := req.GetCursor(); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil {
			return stream.Fail[teleport.ExportedEvent](fmt.Errorf("bad cursor %q", c))
		}
		from = n + 1
	}
	l.mu.Lock()
	l.reads[req.GetChunk()]++
	first := l.reads[req.GetChunk()] == 1
	l.mu.Unlock()
	var out []teleport.ExportedEvent
	for i := from; i < len(events); i++ {
		out = append(out, teleport.ExportedEvent{Event: events[i], Cursor: strconv.Itoa(i)})
	}
	if n, ok := l.cut[req.GetChunk()]; ok && first {
		return stream.Chain(stream.Slice(out[:n]), stream.Fail[teleport.ExportedEvent](status.Error(codes.Unavailable, "stream cut")))
	}
	return stream.Slice(out)
}

// all is every event's id, sorted.
func (l *exportLog) all() []string {
	var ids []string
	for _, chunks := range l.chunks {
		for _, events := range chunks {
			for _, e := range events {
				ids = append(ids, e.ID)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// recorded is a Recorder that remembers the recordings registered, and
// how many events the outlet had been sent when each was.
type recorded struct {
	out *fakeOutlet

	mu   sync.Mutex
	sids map[string]int
}

func (r *recorded) Add(_ context.Context, sid string, _ time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sids == nil {
		r.sids = map[string]int{}
	}
	r.sids[sid] = len(r.out.ids())
	return nil
}

func testExporter(src ExportSource, out *fakeOutlet, st *position.Store, start time.Time) (*Exporter, *recorded, *fakeProgress) {
	rec := &recorded{out: out}
	prog := &fakeProgress{}
	return &Exporter{
		Src: src, Audit: &Audit{Out: out, Recordings: rec, Prog: prog}, Pos: st.Export(), Prog: prog,
		Start: start, Concurrency: 3, Log: zerolog.Nop(),
	}, rec, prog
}

// TestExporterPublishesEveryChunkOnce: five days of two chunks each are
// published once, each session.upload's recording registered before its
// event is sent; the dates past the straggler window are closed with
// their totals and their chunk positions dropped, the recent ones keep
// their chunks done; a second pass publishes nothing again.
func TestExporterPublishesEveryChunkOnce(t *testing.T) {
	now := time.Now().UTC()
	start := utcDate(now).AddDate(0, 0, -4)
	l := newExportLog(start, now, 2, 20)
	out := &fakeOutlet{}
	st := position.Memory()
	x, rec, prog := testExporter(l, out, st, start)
	if err := x.Pass(t.Context(), now); err != nil {
		t.Fatalf("Pass: %v", err)
	}
	wantOnce(t, out.ids(), l.all())
	if n := prog.chunks.Load(); n != 10 {
		t.Errorf("%d chunks reported done; want 10", n)
	}
	if n := prog.events.Load(); n != 200 {
		t.Errorf("%d events reported acknowledged; want 200", n)
	}
	if n := prog.datesDone.Load(); n != 5 {
		t.Errorf("%d dates reported done; want 5", n)
	}
	sent := out.ids()
	for day := range l.chunks {
		for c, events := range l.chunks[day] {
			sid := "s-" + day + "-" + c
			at, ok := rec.sids[sid]
			if !ok {
				t.Errorf("recording %s not registered", sid)
				continue
			}
			if i := slices.Index(sent, events[0].ID); i < at {
				t.Errorf("recording %s registered after its session.upload was sent (event %d, registered at %d)", sid, i, at)
			}
		}
	}
	exp := st.Export()
	for i, d := range datesBetween(start, now) {
		closed := i == 0 // only the date four days back is past the three straggler days
		if exp.Closed(d) != closed {
			t.Errorf("%s closed = %v; want %v", position.Day(d), exp.Closed(d), closed)
		}
		if closed {
			var ds position.Date
			if _, err := st.Get(position.DateKey(d), &ds); err != nil || ds.Chunks != 2 || ds.Events != 40 {
				t.Errorf("%s: %+v, %v; want 2 chunks of 40 events", position.Day(d), ds, err)
			}
			if keys := st.Keys(position.ChunkPrefix(d)); len(keys) != 0 {
				t.Errorf("%s is closed but keeps chunk positions %v", position.Day(d), keys)
			}
			continue
		}
		for _, c := range []string{"c0", "c1"} {
			cs, err := exp.Chunk(d, c)
			if err != nil || !cs.Done || cs.Events != 20 || cs.Cursor != "19" {
				t.Errorf("%s %s: %+v, %v; want done at cursor 19 with 20 events", position.Day(d), c, cs, err)
			}
		}
	}
	if err := x.Pass(t.Context(), now.Add(time.Second)); err != nil {
		t.Fatalf("second Pass: %v", err)
	}
	if n := len(out.ids()); n != 200 {
		t.Errorf("the second pass sent %d events again", n-200)
	}
}

// TestExporterRetriesACutChunkFromItsPosition: a chunk whose stream breaks
// after 7 events is read again from the position its attempt saved: no
// event is sent twice, and the retry is reported.
func TestExporterRetriesACutChunkFromItsPosition(t *testing.T) {
	now := time.Now().UTC()
	start := utcDate(now)
	l := newExportLog(start, now, 2, 30)
	l.cut["c1"] = 7
	out := &fakeOutlet{}
	x, _, _ := testExporter(l, out, position.Memory(), start)
	var retries atomic.Int64
	x.Retrying = func() { retries.Add(1) }
	if err := x.Pass(t.Context(), now); err != nil {
		t.Fatalf("Pass: %v", err)
	}
	wantOnce(t, out.ids(), l.all())
	if n := retries.Load(); n != 1 {
		t.Errorf("%d retries reported; want 1", n)
	}
	if n := l.reads["c1"]; n != 2 {
		t.Errorf("the cut chunk was read %d times; want 2", n)
	}
}

// TestExporterFiltersAndSkipsWhatIsOnTheBus: events filtered out or on the
// bus already (a recovery) are not sent, yet the chunk's position passes
// them and its count holds the events on the bus.
func TestExporterFiltersAndSkipsWhatIsOnTheBus(t *testing.T) {
	now := time.Now().UTC()
	start := utcDate(now)
	l := newExportLog(start, now, 1, 10)
	day := position.Day(start)
	out := &fakeOutlet{onBus: map[string]bool{}}
	for _, e := range l.chunks[day]["c0"][5:8] {
		out.onBus[bus.Event{ID: e.ID, Type: e.Type}.MsgID()] = true
	}
	st := position.Memory()
	x, _, _ := testExporter(l, out, st, start)
	x.Audit.Filter = Filter{Skip: []string{sessionUploadType}}
	if err := x.Pass(t.Context(), now); err != nil {
		t.Fatalf("Pass: %v", err)
	}
	want := []string{}
	for i, e := range l.chunks[day]["c0"] {
		if i != 0 && (i < 5 || i >= 8) {
			want = append(want, e.ID)
		}
	}
	if got := out.ids(); !slices.Equal(got, want) {
		t.Errorf("sent %v; want %v", got, want)
	}
	cs, err := st.Export().Chunk(start, "c0")
	if err != nil || !cs.Done || cs.Cursor != "9" || cs.Events != 9 {
		t.Errorf("chunk position %+v, %v; want done at 9 with 9 events on the bus (6 sent, 3 found)", cs, err)
	}
}

// TestExporterStopsAtAFailedPublish: a publish that fails ends the pass
// with its error, and the chunk's position never passes the failed event
// (a retry reads from there, and the tail scan skips what did land).
func TestExporterStopsAtAFailedPublish(t *testing.T) {
	now := time.Now().UTC()
	start := utcDate(now)
	l := newExportLog(start, now, 1, 10)
	refused := fmt.Errorf("%w: publish: maximum bytes exceeded", position.ErrBus)
	out := &fakeOutlet{}
	out.ack = func(e bus.Event, done func(error)) {
		if e.ID == l.chunks[position.Day(start)]["c0"][4].ID {
			done(refused)
			return
		}
		done(nil)
	}
	st := position.Memory()
	x, _, _ := testExporter(l, out, st, start)
	ctx, cancel := context.WithCancel(t.Context())
	x.Retrying = cancel // one failure is enough: no retry
	err := x.Pass(ctx, now)
	if !errors.Is(err, refused) && !errors.Is(err, context.Canceled) {
		t.Fatalf("Pass: %v; want the publish error", err)
	}
	cs, gerr := st.Export().Chunk(start, "c0")
	if gerr != nil {
		t.Fatal(gerr)
	}
	if n, err := strconv.Atoi(cmp.Or(cs.Cursor, "-1")); cs.Done || err != nil || n >= 4 {
		t.Errorf("chunk position %+v; want not done, before cursor 4 (the failed event)", cs)
	}
	if n := len(out.ids()); n < 5 {
		t.Errorf("%d events sent; the pass stopped before the failed one", n)
	}
}

// TestExporterOnAServerWithoutTheExportAPI: NotImplemented is
// ErrBulkUnsupported, the run's cue to page with search.
func TestExporterOnAServerWithoutTheExportAPI(t *testing.T) {
	now := time.Now().UTC()
	l := newExportLog(now, now, 1, 1)
	l.unsupported = true
	x, _, _ := testExporter(l, &fakeOutlet{}, position.Memory(), now)
	if err := x.Pass(t.Context(), now); !errors.Is(err, ErrBulkUnsupported) {
		t.Fatalf("Pass: %v; want ErrBulkUnsupported", err)
	}
}
