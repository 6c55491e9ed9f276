package teleportsim

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/client"
	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"
	apievents "github.com/gravitational/teleport/api/types/events"
	"github.com/gravitational/trace"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var baseTime = time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)

// startSim starts a server that Close()s at the end of the test.
func startSim(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// connect dials s with the real Teleport client and an identity file.
func connect(t *testing.T, s *Server) *client.Client {
	t.Helper()
	path, err := s.WriteIdentity(t.TempDir(), "event-handler", time.Hour)
	if err != nil {
		t.Fatalf("write identity: %v", err)
	}
	clt, err := dial(t.Context(), s.Addr(), client.LoadIdentityFile(path))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = clt.Close() })
	return clt
}

func dial(ctx context.Context, addr string, creds client.Credentials) (*client.Client, error) {
	return dialTimeout(ctx, addr, creds, 3*time.Second)
}

func dialTimeout(ctx context.Context, addr string, creds client.Credentials, timeout time.Duration) (*client.Client, error) {
	return client.New(ctx, client.Config{
		Addrs:       []string{addr},
		Credentials: []client.Credentials{creds},
		DialTimeout: timeout,
	})
}

// searchAll pages through SearchUnstructuredEvents until the LastKey is empty.
func searchAll(t *testing.T, clt *client.Client, from, to time.Time, types []string, limit int, order types.EventOrder) []*auditlogpb.EventUnstructured {
	t.Helper()
	var out []*auditlogpb.EventUnstructured
	key := ""
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatal("search does not end")
		}
		items, next, err := clt.SearchUnstructuredEvents(t.Context(), from, to, "default", types, limit, order, key)
		if err != nil {
			t.Fatalf("search page %d: %v", pages, err)
		}
		if len(items) > limit {
			t.Fatalf("page %d has %d events, limit %d", pages, len(items), limit)
		}
		out = append(out, items...)
		if next == "" {
			return out
		}
		key = next
	}
}

func ids(events []*auditlogpb.EventUnstructured) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.GetId()
	}
	return out
}

func TestSearchPagesThroughEveryEvent(t *testing.T) {
	s := startSim(t, Options{Seed: 7, Events: 1500, Sessions: 40, From: baseTime, To: baseTime.Add(72 * time.Hour)})
	clt := connect(t, s)

	ping, err := clt.Ping(t.Context())
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	if ping.ClusterName != DefaultClusterName || ping.ServerVersion != CurrentVersion {
		t.Errorf("ping = %q %q, want %q %q", ping.ClusterName, ping.ServerVersion, DefaultClusterName, CurrentVersion)
	}

	want := s.AllEventIDs()
	if len(want) != 1500 {
		t.Fatalf("server holds %d events, want 1500", len(want))
	}
	got := searchAll(t, clt, baseTime, baseTime.Add(72*time.Hour), nil, 100, types.EventOrderAscending)
	if !slices.Equal(ids(got), want) {
		t.Fatalf("ascending search returned %d events, not the %d the server holds in order", len(got), len(want))
	}
	for i := 1; i < len(got); i++ {
		if got[i].GetTime().AsTime().Before(got[i-1].GetTime().AsTime()) {
			t.Fatalf("event %d is older than event %d", i, i-1)
		}
	}
	desc := searchAll(t, clt, baseTime, baseTime.Add(72*time.Hour), nil, 333, types.EventOrderDescending)
	slices.Reverse(desc)
	if !slices.Equal(ids(desc), want) {
		t.Fatalf("descending search returned %d events, not the server's %d in reverse", len(desc), len(want))
	}

	// A window selects only its events.
	from, to := baseTime.Add(24*time.Hour), baseTime.Add(36*time.Hour)
	window := searchAll(t, clt, from, to, nil, 50, types.EventOrderAscending)
	if len(window) == 0 || len(window) >= len(want) {
		t.Fatalf("window search returned %d of %d events", len(window), len(want))
	}
	for _, e := range window {
		if tm := e.GetTime().AsTime(); tm.Before(from) || tm.After(to) {
			t.Fatalf("event at %s is outside [%s, %s]", tm, from, to)
		}
	}
}

func TestSearchTypesFilter(t *testing.T) {
	s := startSim(t, Options{Seed: 3, Events: 900, Sessions: 20, From: baseTime, To: baseTime.Add(48 * time.Hour)})
	clt := connect(t, s)
	counts := s.CountsByType()
	got := searchAll(t, clt, baseTime, baseTime.Add(48*time.Hour), []string{"user.login", "session.upload"}, 40, types.EventOrderAscending)
	if want := counts["user.login"] + counts["session.upload"]; len(got) != want || want == 0 {
		t.Fatalf("filtered search returned %d events, want %d", len(got), want)
	}
	for _, e := range got {
		if e.GetType() != "user.login" && e.GetType() != "session.upload" {
			t.Fatalf("filtered search returned a %q event", e.GetType())
		}
	}
	if counts["session.upload"] != 20 {
		t.Errorf("%d session.upload events, want 20", counts["session.upload"])
	}
}

func TestEventJSON(t *testing.T) {
	s := startSim(t, Options{Seed: 5, Events: 400, Sessions: 10, From: baseTime, To: baseTime.Add(24 * time.Hour)})
	clt := connect(t, s)
	got := searchAll(t, clt, baseTime, baseTime.Add(24*time.Hour), nil, 500, types.EventOrderAscending)
	seen := map[string]bool{}
	for _, e := range got {
		f := e.GetUnstructured().GetFields()
		seen[e.GetType()] = true
		for _, key := range []string{"event", "code", "time", "uid", "ei", "cluster_name"} {
			if _, ok := f[key]; !ok {
				t.Fatalf("%s event %s has no %q: %v", e.GetType(), e.GetId(), key, f)
			}
		}
		if f["uid"].GetStringValue() != e.GetId() || f["event"].GetStringValue() != e.GetType() {
			t.Fatalf("event %s: uid %q / event %q do not match the envelope", e.GetId(), f["uid"].GetStringValue(), f["event"].GetStringValue())
		}
		tm, err := time.Parse(time.RFC3339Nano, f["time"].GetStringValue())
		if err != nil || !tm.Equal(e.GetTime().AsTime()) || tm.Location() != time.UTC {
			t.Fatalf("event %s time %q does not match %s (%v)", e.GetId(), f["time"].GetStringValue(), e.GetTime().AsTime(), err)
		}
		switch e.GetType() {
		case "user.login":
			if _, ok := f["success"]; !ok || f["user"].GetStringValue() == "" {
				t.Fatalf("user.login without user/success: %v", f)
			}
		case "session.upload":
			if f["sid"].GetStringValue() == "" || f["ei"].GetNumberValue() != sessionUploadIndex {
				t.Fatalf("session.upload without sid or with ei %v", f["ei"])
			}
		case "kube.request":
			if f["verb"].GetStringValue() == "" || f["request_path"].GetStringValue() == "" {
				t.Fatalf("kube.request without verb/request_path: %v", f)
			}
		case "db.session.query":
			if f["db_query"].GetStringValue() == "" {
				t.Fatalf("db.session.query without db_query: %v", f)
			}
		}
	}
	for _, typ := range []string{"user.login", "session.start", "session.end", "session.upload", "db.session.query", "kube.request", "role.created", "access_request.create"} {
		if !seen[typ] {
			t.Errorf("no %s event among %d", typ, len(got))
		}
	}
}

// exportAll reads every chunk of every date in [from, to).
func exportAll(t *testing.T, clt *client.Client, from, to time.Time) (map[string]int, map[string][]*auditlogpb.ExportEventUnstructured) {
	t.Helper()
	sizes := map[string]int{}
	byChunk := map[string][]*auditlogpb.ExportEventUnstructured{}
	for d := from.Truncate(24 * time.Hour); d.Before(to); d = d.Add(24 * time.Hour) {
		for _, c := range listChunks(t, clt, d) {
			evs, err := exportChunk(t.Context(), clt, d, c, "")
			if err != nil {
				t.Fatalf("export chunk %s of %s: %v", c, d.Format(time.DateOnly), err)
			}
			sizes[c] = len(evs)
			byChunk[c] = evs
		}
	}
	return sizes, byChunk
}

func listChunks(t *testing.T, clt *client.Client, date time.Time) []string {
	t.Helper()
	st := clt.GetEventExportChunks(t.Context(), &auditlogpb.GetEventExportChunksRequest{Date: timestamppb.New(date)})
	var out []string
	for st.Next() {
		out = append(out, st.Item().GetChunk())
	}
	if err := st.Done(); err != nil {
		t.Fatalf("list chunks of %s: %v", date.Format(time.DateOnly), err)
	}
	return out
}

func exportChunk(ctx context.Context, clt *client.Client, date time.Time, chunk, cursor string) ([]*auditlogpb.ExportEventUnstructured, error) {
	st := clt.ExportUnstructuredEvents(ctx, &auditlogpb.ExportUnstructuredEventsRequest{Date: timestamppb.New(date), Chunk: chunk, Cursor: cursor})
	var out []*auditlogpb.ExportEventUnstructured
	for st.Next() {
		out = append(out, st.Item())
	}
	return out, st.Done()
}

func TestExportCoversEveryEvent(t *testing.T) {
	from, to := baseTime, baseTime.Add(4*24*time.Hour)
	s := startSim(t, Options{Seed: 11, Events: 2000, Sessions: 30, From: from, To: to})
	clt := connect(t, s)
	sizes, byChunk := exportAll(t, clt, from, to)
	var got []string
	singles := 0
	for c, evs := range byChunk {
		if len(evs) == 1 {
			singles++
		}
		for _, e := range evs {
			got = append(got, e.GetEvent().GetId())
			if e.GetCursor() == "" {
				t.Fatalf("chunk %s: event %s has no cursor", c, e.GetEvent().GetId())
			}
		}
	}
	want := s.AllEventIDs()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("export returned %d events in %d chunks, server holds %d", len(got), len(sizes), len(want))
	}
	if singles < 4 {
		t.Errorf("%d single-event chunks over 4 dates, want at least one per date", singles)
	}
	if len(sizes) < 4*3 {
		t.Errorf("%d chunks over 4 dates, want several per date", len(sizes))
	}
}

func TestExportCursorResumesAfterTheEvent(t *testing.T) {
	s := startSim(t, Options{Seed: 2, Events: 600, From: baseTime, To: baseTime.Add(24 * time.Hour)})
	clt := connect(t, s)
	chunks := listChunks(t, clt, baseTime)
	var chunk string
	for _, c := range chunks {
		if s.ExportChunks(baseTime)[c] > 10 {
			chunk = c
			break
		}
	}
	all, err := exportChunk(t.Context(), clt, baseTime, chunk, "")
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	rest, err := exportChunk(t.Context(), clt, baseTime, chunk, all[4].GetCursor())
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if len(rest) != len(all)-5 || rest[0].GetEvent().GetId() != all[5].GetEvent().GetId() {
		t.Fatalf("resume after event 5 of %d gave %d events starting at %s", len(all), len(rest), rest[0].GetEvent().GetId())
	}
	last, err := exportChunk(t.Context(), clt, baseTime, chunk, all[len(all)-1].GetCursor())
	if err != nil || len(last) != 0 {
		t.Fatalf("resume after the last event gave %d events, %v", len(last), err)
	}
	if _, err := exportChunk(t.Context(), clt, baseTime, chunk, "not-a-cursor"); !trace.IsBadParameter(err) {
		t.Errorf("bad cursor: got %v, want a bad-parameter error", err)
	}
	if _, err := exportChunk(t.Context(), clt, baseTime, "no-such-chunk", ""); !trace.IsNotFound(err) {
		t.Errorf("unknown chunk: got %v, want not found", err)
	}
}

func TestStragglerChunkAppears(t *testing.T) {
	s := startSim(t, Options{Seed: 4, Events: 300, From: baseTime, To: baseTime.Add(48 * time.Hour)})
	clt := connect(t, s)
	before := listChunks(t, clt, baseTime)
	chunk, err := s.AddStraggler(baseTime.Add(5*time.Hour), 1)
	if err != nil {
		t.Fatalf("add straggler: %v", err)
	}
	after := listChunks(t, clt, baseTime)
	if len(after) != len(before)+1 || !slices.Contains(after, chunk) {
		t.Fatalf("chunks %d -> %d, straggler %s listed: %v", len(before), len(after), chunk, slices.Contains(after, chunk))
	}
	evs, err := exportChunk(t.Context(), clt, baseTime, chunk, "")
	if err != nil || len(evs) != 1 {
		t.Fatalf("straggler chunk gave %d events, %v", len(evs), err)
	}
	if tm := evs[0].GetEvent().GetTime().AsTime(); tm.Before(baseTime) || !tm.Before(baseTime.Add(24*time.Hour)) {
		t.Errorf("straggler event at %s is not in its date", tm)
	}
	if ids := s.AllEventIDs(); len(ids) != 301 || !slices.Contains(ids, evs[0].GetEvent().GetId()) {
		t.Errorf("server holds %d events after the straggler, want 301 including it", len(ids))
	}
}

// streamSession reads a recording through StreamUnstructuredSessionEvents.
func streamSession(ctx context.Context, clt *client.Client, sid string, from int64) ([]*auditlogpb.EventUnstructured, error) {
	ch, errs := clt.StreamUnstructuredSessionEvents(ctx, sid, from)
	var out []*auditlogpb.EventUnstructured
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return out, nil
			}
			out = append(out, e)
		case err := <-errs:
			return out, err
		}
	}
}

func TestSessionRecordings(t *testing.T) {
	s := startSim(t, Options{Seed: 9, Events: 120, Sessions: 20, HugeEvents: 2, MissingRecordingRate: 0.3, From: baseTime, To: baseTime.Add(24 * time.Hour)})
	clt := connect(t, s)
	var found, missing int
	sawHuge := false
	for _, info := range s.Sessions() {
		evs, err := streamSession(t.Context(), clt, info.ID, 0)
		if info.Missing {
			missing++
			if !trace.IsNotFound(err) {
				t.Fatalf("missing recording %s: got %v, want not found", info.ID, err)
			}
			continue
		}
		found++
		if err != nil {
			t.Fatalf("stream %s: %v", info.ID, err)
		}
		if len(evs) != info.Events {
			t.Fatalf("session %s streamed %d events, want %d", info.ID, len(evs), info.Events)
		}
		for i, e := range evs {
			if e.GetIndex() != int64(i) || e.GetUnstructured().GetFields()["sid"].GetStringValue() != info.ID && e.GetType() != "print" {
				t.Fatalf("session %s event %d: index %d type %s", info.ID, i, e.GetIndex(), e.GetType())
			}
			if proto.Size(e) > 1<<20 {
				sawHuge = true
			}
		}
		streamed := make(map[string]int)
		for _, e := range evs {
			streamed[e.GetType()]++
		}
		if !maps.Equal(streamed, info.Types) {
			t.Fatalf("session %s streamed types %v, Sessions() says %v", info.ID, streamed, info.Types)
		}
		if evs[0].GetType() != "session.start" || evs[len(evs)-1].GetType() != "session.end" {
			t.Fatalf("session %s runs %s..%s", info.ID, evs[0].GetType(), evs[len(evs)-1].GetType())
		}
		rest, err := streamSession(t.Context(), clt, info.ID, 3)
		if err != nil || len(rest) != info.Events-3 || rest[0].GetIndex() != 3 {
			t.Fatalf("stream %s from index 3: %d events, %v", info.ID, len(rest), err)
		}
	}
	if found == 0 || missing == 0 {
		t.Errorf("%d recordings found, %d missing; want some of each", found, missing)
	}
	if !sawHuge {
		t.Error("no print event over 1 MB")
	}
	if _, err := streamSession(t.Context(), clt, "no-such-session", 0); !trace.IsNotFound(err) {
		t.Errorf("unknown session: got %v, want not found", err)
	}
}

func TestRecordingWaitsForUploadLag(t *testing.T) {
	now := baseTime.Add(10 * 24 * time.Hour)
	clock := &fakeClock{now: now}
	s := startSim(t, Options{Seed: 1, Events: 30, Sessions: 5, From: now.Add(-time.Hour), To: now, UploadLag: 2 * time.Hour, Now: clock.Now})
	clt := connect(t, s)
	info := s.Sessions()[0]
	if _, err := streamSession(t.Context(), clt, info.ID, 0); !trace.IsNotFound(err) {
		t.Fatalf("before the upload lag: got %v, want not found", err)
	}
	clock.set(info.AvailableAt)
	evs, err := streamSession(t.Context(), clt, info.ID, 0)
	if err != nil || len(evs) != info.Events {
		t.Fatalf("after the upload lag: %d events, %v", len(evs), err)
	}
}

func TestOlderTeleport(t *testing.T) {
	opts := Options{Seed: 21, Events: 200, Sessions: 8, From: baseTime, To: baseTime.Add(24 * time.Hour)}
	cur := startSim(t, opts)
	opts.Older = true
	old := startSim(t, opts)
	oldClt, curClt := connect(t, old), connect(t, cur)

	ping, err := oldClt.Ping(t.Context())
	if err != nil || ping.ServerVersion != OlderVersion {
		t.Fatalf("older ping: %q, %v", ping.ServerVersion, err)
	}
	st := oldClt.GetEventExportChunks(t.Context(), &auditlogpb.GetEventExportChunksRequest{Date: timestamppb.New(baseTime)})
	for st.Next() {
	}
	if err := st.Done(); !trace.IsNotImplemented(err) {
		t.Errorf("older GetEventExportChunks: got %v, want not implemented", err)
	}
	if _, err := exportChunk(t.Context(), oldClt, baseTime, "x", ""); !trace.IsNotImplemented(err) {
		t.Errorf("older ExportUnstructuredEvents: got %v, want not implemented", err)
	}
	sid := old.Sessions()[0].ID
	if _, err := streamSession(t.Context(), oldClt, sid, 0); !trace.IsNotImplemented(err) {
		t.Errorf("older StreamUnstructuredSessionEvents: got %v, want not implemented", err)
	}
	if got := searchAll(t, oldClt, baseTime, baseTime.Add(24*time.Hour), nil, 50, types.EventOrderAscending); len(got) != 200 {
		t.Errorf("older search returned %d events, want 200", len(got))
	}

	// The structured stream, converted, equals the unstructured one.
	for _, info := range old.Sessions() {
		ch, errs := oldClt.StreamSessionEvents(t.Context(), info.ID, 0)
		var structured []apievents.AuditEvent
	read:
		for {
			select {
			case e, ok := <-ch:
				if !ok {
					break read
				}
				structured = append(structured, e)
			case err := <-errs:
				t.Fatalf("structured stream %s: %v", info.ID, err)
			}
		}
		unstructured, err := streamSession(t.Context(), curClt, info.ID, 0)
		if err != nil || len(unstructured) != len(structured) || len(structured) != info.Events {
			t.Fatalf("session %s: %d structured, %d unstructured events (%v), want %d", info.ID, len(structured), len(unstructured), err, info.Events)
		}
		for i, ev := range structured {
			conv, err := apievents.ToUnstructured(ev)
			if err != nil {
				t.Fatalf("convert: %v", err)
			}
			if !proto.Equal(conv, unstructured[i]) {
				t.Fatalf("session %s event %d (%s): structured converts to\n%v\nunstructured is\n%v", info.ID, i, ev.GetType(), conv, unstructured[i])
			}
		}
	}

	// The structured search matches the unstructured one.
	evs, _, err := oldClt.SearchEvents(t.Context(), baseTime, baseTime.Add(24*time.Hour), "default", nil, 500, types.EventOrderAscending, "")
	if err != nil || len(evs) != 200 {
		t.Fatalf("structured search: %d events, %v", len(evs), err)
	}
	if evs[0].GetID() != old.AllEventIDs()[0] {
		t.Errorf("structured search starts at %s, want %s", evs[0].GetID(), old.AllEventIDs()[0])
	}
	ends, _, err := oldClt.SearchSessionEvents(t.Context(), baseTime, baseTime.Add(24*time.Hour), 100, types.EventOrderAscending, "")
	if err != nil || len(ends) != 8 || ends[0].GetType() != "session.end" {
		t.Errorf("session search: %d events, %v", len(ends), err)
	}
}

func TestLocks(t *testing.T) {
	s := startSim(t, Options{})
	clt := connect(t, s)
	lock, err := types.NewLock("lock-mallory", types.LockSpecV2{Target: types.LockTarget{User: "mallory"}, Message: "too many failed logins"})
	if err != nil {
		t.Fatal(err)
	}
	if err := clt.UpsertLock(t.Context(), lock); err != nil {
		t.Fatalf("upsert lock: %v", err)
	}
	locks := s.Locks()
	if len(locks) != 1 || locks[0].Target().User != "mallory" || locks[0].Message() != "too many failed logins" {
		t.Fatalf("server holds locks %v", locks)
	}
	got, err := clt.GetLocks(t.Context(), true, types.LockTarget{User: "mallory"})
	if err != nil || len(got) != 1 || got[0].GetName() != "lock-mallory" {
		t.Fatalf("get locks: %v, %v", got, err)
	}
	if got, err := clt.GetLocks(t.Context(), false, types.LockTarget{User: "alice"}); err != nil || len(got) != 0 {
		t.Fatalf("get locks for alice: %v, %v", got, err)
	}

	denied := startSim(t, Options{DenyLocks: true})
	if err := connect(t, denied).UpsertLock(t.Context(), lock); !trace.IsAccessDenied(err) {
		t.Errorf("upsert without permission: got %v, want access denied", err)
	}
}

func TestKeyPairCredentials(t *testing.T) {
	s := startSim(t, Options{Events: 10})
	dir := t.TempDir()
	if _, err := s.WriteIdentity(dir, "event-handler", time.Hour); err != nil {
		t.Fatal(err)
	}
	clt, err := dial(t.Context(), s.Addr(), client.LoadKeyPair(filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName), filepath.Join(dir, CAFileName)))
	if err != nil {
		t.Fatalf("connect with key pair: %v", err)
	}
	defer clt.Close()
	if _, err := clt.Ping(t.Context()); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func TestRefusedCredentials(t *testing.T) {
	s := startSim(t, Options{Events: 10})
	other := startSim(t, Options{ClusterName: "other.example"})

	// A certificate from another CA, trusting this server's CA.
	dir := t.TempDir()
	if _, err := other.WriteIdentity(dir, "intruder", time.Hour); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	ownDir := filepath.Dir(caFile)
	if _, err := s.WriteIdentity(ownDir, "x", time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err := dialTimeout(t.Context(), s.Addr(), client.LoadKeyPair(filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName), caFile), time.Second)
	if err == nil {
		t.Fatal("a client with a certificate from another CA connected")
	}
	// The server refuses the handshake; the client retries until its dial
	// timeout and reports the last connection error ("remote error: tls:
	// unknown certificate authority", or a broken pipe when the alert is
	// lost).
	if msg := fmt.Sprint(trace.Unwrap(err)); !strings.Contains(msg, "context deadline exceeded") {
		t.Errorf("foreign CA error: %s", msg)
	}

	expired, err := s.WriteIdentity(t.TempDir(), "event-handler", -time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = dialTimeout(t.Context(), s.Addr(), client.LoadIdentityFile(expired), time.Second)
	if err == nil {
		t.Fatal("an expired identity connected")
	}
	if msg := fmt.Sprint(trace.Unwrap(err)); !strings.Contains(msg, "context deadline exceeded") {
		t.Errorf("expired identity error: %s", msg)
	}
}

func TestFaults(t *testing.T) {
	s := startSim(t, Options{Seed: 6, Events: 300, From: baseTime, To: baseTime.Add(24 * time.Hour)})
	clt := connect(t, s)
	search := func() error {
		_, _, err := clt.SearchUnstructuredEvents(t.Context(), baseTime, baseTime.Add(24*time.Hour), "default", nil, 10, types.EventOrderAscending, "")
		return err
	}

	if err := s.SetFaults(Faults{RateLimitRate: 1}); err != nil {
		t.Fatal(err)
	}
	if err := search(); !trace.IsLimitExceeded(err) {
		t.Errorf("rate limit fault: got %v, want limit exceeded", err)
	}
	if _, err := clt.Ping(t.Context()); err != nil {
		t.Errorf("ping under faults: %v", err)
	}
	if err := s.SetFaults(Faults{UnavailableRate: 1}); err != nil {
		t.Fatal(err)
	}
	if err := search(); !trace.IsConnectionProblem(err) {
		t.Errorf("unavailable fault: got %v, want connection problem", err)
	}
	if err := s.SetFaults(Faults{UnavailableRate: 2}); err == nil {
		t.Error("a rate of 2 was accepted")
	}

	if err := s.SetFaults(Faults{CutAfter: 3}); err != nil {
		t.Fatal(err)
	}
	chunk := ""
	for c, n := range s.ExportChunks(baseTime) {
		if n > 3 {
			chunk = c
		}
	}
	got, err := exportChunk(t.Context(), clt, baseTime, chunk, "")
	if len(got) != 3 || !trace.IsConnectionProblem(err) {
		t.Fatalf("cut stream gave %d events, %v; want 3 and a connection problem", len(got), err)
	}
	// Resuming from the cursors makes progress through the cut.
	var all []*auditlogpb.ExportEventUnstructured
	cursor := ""
	for i := 0; i < 1000; i++ {
		evs, err := exportChunk(t.Context(), clt, baseTime, chunk, cursor)
		all = append(all, evs...)
		if len(evs) > 0 {
			cursor = evs[len(evs)-1].GetCursor()
		}
		if err == nil {
			break
		}
	}
	if len(all) != s.ExportChunks(baseTime)[chunk] {
		t.Errorf("resumed export read %d events, chunk holds %d", len(all), s.ExportChunks(baseTime)[chunk])
	}

	if err := s.SetFaults(Faults{Latency: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := search(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("call with 200ms latency took %s", d)
	}
	if n := s.InjectedErrors(); n["ResourceExhausted"] != 1 || n["Unavailable"] < 2 {
		t.Errorf("injected errors %v", n)
	}
	_ = s.SetFaults(Faults{})

	// A restart closes the connection; the client reconnects to the same data.
	if err := s.Restart(t.Context()); err != nil {
		t.Fatalf("restart: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for err := search(); err != nil; err = search() {
		if time.Now().After(deadline) {
			t.Fatalf("search after restart: %v", err)
		}
	}
	if len(s.AllEventIDs()) != 300 {
		t.Errorf("server holds %d events after restart, want 300", len(s.AllEventIDs()))
	}
}

func TestLiveEvents(t *testing.T) {
	now := time.Now().UTC()
	s := startSim(t, Options{Seed: 8, Events: 50, From: now.Add(-time.Hour), To: now, LiveRate: 200, LiveChunkAge: 200 * time.Millisecond})
	clt := connect(t, s)
	deadline := time.Now().Add(10 * time.Second)
	for len(s.AllEventIDs()) < 150 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d events after 10s of 200 events/s", len(s.AllEventIDs()))
		}
		time.Sleep(20 * time.Millisecond) // polling, not synchronisation
	}
	// Live events are searchable at once and exported once sealed.
	var exported int
	for exported < 150 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d events exported", exported)
		}
		time.Sleep(20 * time.Millisecond) // polling, not synchronisation
		exported = 0
		for _, n := range s.ExportChunks(now) {
			exported += n
		}
		if day := now.Add(-time.Hour); day.YearDay() != now.YearDay() {
			for _, n := range s.ExportChunks(day) {
				exported += n
			}
		}
	}
	got := searchAll(t, clt, now.Add(-2*time.Hour), time.Now().Add(time.Minute), nil, 1000, types.EventOrderAscending)
	if len(got) < 150 {
		t.Errorf("search found %d events, want at least 150", len(got))
	}
}

func TestDeterministic(t *testing.T) {
	opts := Options{Seed: 42, Events: 500, Sessions: 20, From: baseTime, To: baseTime.Add(48 * time.Hour)}
	a, b := startSim(t, opts), startSim(t, opts)
	if !slices.Equal(a.AllEventIDs(), b.AllEventIDs()) {
		t.Fatal("two servers with the same seed hold different events")
	}
	ea := searchAll(t, connect(t, a), opts.From, opts.To, nil, 100, types.EventOrderAscending)
	eb := searchAll(t, connect(t, b), opts.From, opts.To, nil, 100, types.EventOrderAscending)
	for i := range ea {
		if !proto.Equal(ea[i], eb[i]) {
			t.Fatalf("event %d differs between two servers with the same seed", i)
		}
	}
	opts.Seed = 43
	c := startSim(t, opts)
	if slices.Equal(a.AllEventIDs(), c.AllEventIDs()) {
		t.Error("different seeds give the same events")
	}
}

func TestHugeAuditEventsComeAlone(t *testing.T) {
	s := startSim(t, Options{Seed: 12, Events: 400, HugeEvents: 3, From: baseTime, To: baseTime.Add(24 * time.Hour)})
	clt := connect(t, s)
	key, huge := "", 0
	for {
		items, next, err := clt.SearchUnstructuredEvents(t.Context(), baseTime, baseTime.Add(24*time.Hour), "default", nil, 500, types.EventOrderAscending, key)
		if err != nil {
			t.Fatalf("search: %v", err)
		}
		for _, e := range items {
			if proto.Size(e) > 1<<20 {
				huge++
				if len(items) != 1 && e != items[len(items)-1] {
					t.Errorf("a %d-byte event shares a page of %d", proto.Size(e), len(items))
				}
			}
		}
		if next == "" {
			break
		}
		key = next
	}
	if huge != 3 {
		t.Errorf("%d events over 1 MB, want 3", huge)
	}
}

func TestOptionsErrors(t *testing.T) {
	for name, o := range map[string]Options{
		"negative events": {Events: -1},
		"from after to":   {From: baseTime, To: baseTime.Add(-time.Hour)},
		"bad rate":        {MissingRecordingRate: 1.5},
		"bad faults":      {Faults: Faults{CutAfter: -2}},
	} {
		if _, err := Start(t.Context(), o); err == nil {
			t.Errorf("%s: Start accepted it", name)
		}
	}
	s := startSim(t, Options{})
	if _, err := Start(t.Context(), Options{Addr: s.Addr()}); err == nil {
		t.Error("a second server started on a port in use")
	}
}

func TestStartIsFast(t *testing.T) {
	start := time.Now()
	s := startSim(t, Options{Seed: 1, Events: 10000, Sessions: 300, From: baseTime, To: baseTime.Add(30 * 24 * time.Hour)})
	if d := time.Since(start); d > time.Second {
		t.Errorf("start with 10k events took %s", d)
	}
	if n := len(s.AllEventIDs()); n != 10000 {
		t.Errorf("%d events, want 10000", n)
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
