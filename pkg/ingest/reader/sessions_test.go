package reader

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
)

// recordingLog is a recording source over fixed recordings. A recording
// in missing answers NotFound to its first missing[sid] tries (its upload
// lags), or to every try when that is negative. With unstructured false
// the server is older than v17: it lacks StreamUnstructuredSessionEvents.
type recordingLog struct {
	recordings map[string][]*auditlogpb.EventUnstructured
	missing    map[string]int
	older      bool

	mu    sync.Mutex
	tries map[string][]time.Time
	calls []string // which call each try used
}

func newRecordingLog(sids []string, events int) *recordingLog {
	l := &recordingLog{recordings: map[string][]*auditlogpb.EventUnstructured{}, missing: map[string]int{}, tries: map[string][]time.Time{}}
	for _, sid := range sids {
		for i := range events {
			typ := "print"
			if i == 0 {
				typ = "session.start"
			}
			l.recordings[sid] = append(l.recordings[sid], &auditlogpb.EventUnstructured{Type: typ, Id: fmt.Sprintf("%s-%d", sid, i), Index: int64(i)})
		}
	}
	return l
}

func (l *recordingLog) StreamUnstructuredSessionEvents(ctx context.Context, sid string, from int64) (chan *auditlogpb.EventUnstructured, chan error) {
	if l.older {
		l.mu.Lock()
		l.calls = append(l.calls, "unstructured")
		l.mu.Unlock()
		errc := make(chan error, 1)
		errc <- status.Error(codes.Unimplemented, "unknown method StreamUnstructuredSessionEvents")
		return nil, errc
	}
	return l.stream(ctx, "unstructured", sid, from)
}

func (l *recordingLog) StreamSessionEvents(ctx context.Context, sid string, from int64) (chan *auditlogpb.EventUnstructured, chan error) {
	return l.stream(ctx, "structured", sid, from)
}

func (l *recordingLog) stream(ctx context.Context, call, sid string, from int64) (chan *auditlogpb.EventUnstructured, chan error) {
	l.mu.Lock()
	l.tries[sid] = append(l.tries[sid], time.Now())
	l.calls = append(l.calls, call)
	n := len(l.tries[sid])
	l.mu.Unlock()
	errc := make(chan error, 1)
	if m, ok := l.missing[sid]; ok && (m < 0 || n <= m) {
		errc <- status.Errorf(codes.NotFound, "session %q not found", sid)
		return nil, errc
	}
	events := make(chan *auditlogpb.EventUnstructured)
	go func() {
		defer close(events)
		for _, e := range l.recordings[sid][from:] {
			select {
			case events <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return events, errc
}

func (l *recordingLog) triesOf(sid string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.tries[sid])
}

// testSessions runs Sessions over src until every job has ended (or the
// test's deadline), and returns the outlet, the positions and the log.
func testSessions(t *testing.T, src RecordingSource, sids []string, o SessionOptions) (*fakeOutlet, *position.Recordings, string) {
	t.Helper()
	out := &fakeOutlet{}
	pos := position.Memory().Recordings()
	logs := &logtest.Buffer{}
	o.Log = zerolog.New(logs)
	s := NewSessions(src, out, pos, nil, o)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, sid := range sids {
		if err := s.Add(ctx, sid, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, 2) }()
	for !s.Idle() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != context.Canceled && err != context.DeadlineExceeded {
		t.Fatalf("Run: %v", err)
	}
	if !s.Idle() {
		t.Fatalf("jobs still running after a minute:\n%s", logs)
	}
	return out, pos, logs.String()
}

// TestRecordingsAreStreamedOnce: every recording is published once, in
// index order, the skipped types left out, and each job is saved done at
// its end.
func TestRecordingsAreStreamedOnce(t *testing.T) {
	sids := []string{"a", "b", "c", "d", "e"}
	l := newRecordingLog(sids, 50)
	pending := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pending"})
	finished := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "finished"}, []string{"result"})
	out, pos, _ := testSessions(t, l, sids, SessionOptions{SkipTypes: []string{"session.start"}, Metrics: SessionMetrics{Pending: pending, Finished: finished}})
	per := map[string][]int64{}
	for _, e := range out.events() {
		if !e.Session || e.Type == "session.start" {
			t.Fatalf("sent %+v; want session events without session.start", e)
		}
		per[e.SessionID] = append(per[e.SessionID], e.Index)
	}
	for _, sid := range sids {
		if n := len(per[sid]); n != 49 || !slices.IsSorted(per[sid]) || per[sid][0] != 1 {
			t.Errorf("recording %s: %d events sent (%v…); want indexes 1..49 once, in order", sid, n, per[sid][:min(3, n)])
		}
		ss, ok, err := pos.Get(sid)
		if err != nil || !ok || !ss.Done || ss.Next != 50 || ss.Events != 49 || ss.Finished.IsZero() {
			t.Errorf("recording %s saved %+v (%v, %v); want done at index 50 with 49 events", sid, ss, ok, err)
		}
	}
	if v := value(t, pending); v != 0 {
		t.Errorf("pending gauge %v; want 0", v)
	}
	if v := value(t, finished.WithLabelValues("done")); v != 5 {
		t.Errorf("%v jobs counted done; want 5", v)
	}
}

// TestRecordingThatAppearsAfterSeveralTriesIsRead: a recording missing for
// its first three tries is read before its TTL runs out, each miss logged
// at debug, nothing given up.
func TestRecordingThatAppearsAfterSeveralTriesIsRead(t *testing.T) {
	const ttl = 4 * time.Second // tries 1 s apart at most (ttl/4)
	l := newRecordingLog([]string{"late"}, 10)
	l.missing["late"] = 3
	out, pos, logs := testSessions(t, l, []string{"late"}, SessionOptions{MissingTTL: ttl})
	if n := len(out.ids()); n != 10 {
		t.Errorf("%d events sent; want the recording's 10", n)
	}
	tries := l.triesOf("late")
	if len(tries) != 4 {
		t.Fatalf("%d tries; want 3 that miss and one that reads it", len(tries))
	}
	ss, _, err := pos.Get("late")
	if err != nil || !ss.Done || ss.GaveUp {
		t.Fatalf("saved %+v, %v; want done", ss, err)
	}
	if d := ss.Finished.Sub(ss.FirstSeen); d >= ttl {
		t.Errorf("read %s after first seen; want within the %s TTL", d, ttl)
	}
	if n := strings.Count(logs, "session recording not available yet"); n != 3 {
		t.Errorf("%d misses logged; want 3:\n%s", n, logs)
	}
	if strings.Contains(logs, "given up") {
		t.Errorf("a recording was given up:\n%s", logs)
	}
}

// TestRecordingMissingPastItsTTLIsGivenUp: a recording that never appears
// is tried until its TTL and then given up: saved so, counted, logged
// once; the other recordings are read meanwhile.
func TestRecordingMissingPastItsTTLIsGivenUp(t *testing.T) {
	const ttl = time.Second
	l := newRecordingLog([]string{"gone", "here"}, 5)
	l.missing["gone"] = -1
	missing := prometheus.NewCounter(prometheus.CounterOpts{Name: "missing"})
	finished := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "finished"}, []string{"result"})
	out, pos, logs := testSessions(t, l, []string{"gone", "here"}, SessionOptions{MissingTTL: ttl, Metrics: SessionMetrics{Missing: missing, Finished: finished}})
	if n := len(out.ids()); n != 5 {
		t.Errorf("%d events sent; want the 5 of the recording that is there", n)
	}
	ss, _, err := pos.Get("gone")
	if err != nil || !ss.GaveUp || ss.Done || !strings.Contains(ss.Reason, "not found") {
		t.Fatalf("saved %+v, %v; want given up, for not found", ss, err)
	}
	tries := l.triesOf("gone")
	if last := tries[len(tries)-1]; last.Before(ss.FirstSeen.Add(ttl)) {
		t.Errorf("the last try began %s after first seen; want at the %s TTL", last.Sub(ss.FirstSeen), ttl)
	}
	if len(tries) < 3 {
		t.Errorf("%d tries within the TTL; want several", len(tries))
	}
	if n := strings.Count(logs, "session recording given up"); n != 1 {
		t.Errorf("%d give-ups logged; want 1:\n%s", n, logs)
	}
	if v := value(t, missing); v != 1 {
		t.Errorf("missing counter %v; want 1", v)
	}
	if v := value(t, finished.WithLabelValues("gave_up")); v != 1 {
		t.Errorf("gave_up counter %v; want 1", v)
	}
}

// TestOlderServerRecordingsUseTheStructuredCall: a server without
// StreamUnstructuredSessionEvents is asked once, said so once, and every
// recording is read through StreamSessionEvents.
func TestOlderServerRecordingsUseTheStructuredCall(t *testing.T) {
	sids := []string{"a", "b", "c"}
	l := newRecordingLog(sids, 4)
	l.older = true
	out, _, logs := testSessions(t, l, sids, SessionOptions{})
	if n := len(out.ids()); n != 12 {
		t.Errorf("%d events sent; want 12", n)
	}
	if n := strings.Count(logs, "server lacks StreamUnstructuredSessionEvents"); n != 1 {
		t.Errorf("the older server logged %d times; want once:\n%s", n, logs)
	}
	if n := slices.Index(l.calls, "structured"); n < 1 || slices.Contains(l.calls[n:], "unstructured") || len(l.calls)-n != 3 {
		t.Errorf("calls %v; want the unstructured call first, then one structured call per recording", l.calls)
	}
}

// TestSessionsResumeWhatAnEarlierRunLeft: jobs saved unfinished are queued
// again and resume from their saved index; finished ones are not.
func TestSessionsResumeWhatAnEarlierRunLeft(t *testing.T) {
	st := position.Memory()
	pos := st.Recordings()
	ctx := t.Context()
	for _, ss := range []position.Session{
		{SessionID: "half", Next: 6},
		{SessionID: "done", Next: 10, Done: true},
		{SessionID: "gone", GaveUp: true},
	} {
		if err := pos.Save(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	l := newRecordingLog([]string{"half", "done", "gone"}, 10)
	out := &fakeOutlet{}
	s := NewSessions(l, out, pos, nil, SessionOptions{Log: zerolog.Nop()})
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if s.Idle() {
		t.Fatal("nothing queued after Resume")
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx, 1) }()
	for !s.Idle() && rctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	var idx []int64
	for _, e := range out.events() {
		if e.SessionID != "half" {
			t.Errorf("sent an event of %s; only half was unfinished", e.SessionID)
		}
		idx = append(idx, e.Index)
	}
	if !slices.Equal(idx, []int64{6, 7, 8, 9}) {
		t.Errorf("resumed with indexes %v; want 6..9", idx)
	}
	if tries := l.triesOf("done"); len(tries) != 0 {
		t.Errorf("a finished recording was read again")
	}
}

// value is a gauge's or counter's value.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetGauge().GetValue() + d.GetCounter().GetValue()
}
