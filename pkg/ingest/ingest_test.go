package ingest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		os.Exit(runChild(raw))
	}
	// Most tests run exit-on-last-event with the embedded server and no
	// consumer: they need not wait for one to appear (see
	// TestExitOnLastEventWithoutConsumers).
	finishConsumerWait = 0
	goleak.VerifyTestMain(m,
		// grpc and nats keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// env is one test's Teleport double, identity and configuration.
type env struct {
	t   *testing.T
	sim *teleportsim.Server
	cfg *config.Config
	dir string
}

// newEnv starts the Teleport double and writes a configuration for it
// that runs the embedded NATS server under a temporary storage directory.
func newEnv(t *testing.T, opts teleportsim.Options) *env {
	t.Helper()
	ctx := context.Background()
	sim, err := teleportsim.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start teleport double: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	dir := t.TempDir()
	id, err := sim.WriteIdentity(dir, "ingest", time.Hour)
	if err != nil {
		t.Fatalf("write identity: %v", err)
	}
	from := opts.From
	if from.IsZero() {
		from = time.Now().Add(-24 * time.Hour)
	}
	cfg := &config.Config{
		Teleport: config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id, ConnectRetries: 3},
		NATS:     config.NATSConfig{Listen: "127.0.0.1:0"},
		// No memory budget: Run sets the Go memory limit of the whole
		// process, and this test process runs many ingests and their
		// servers at once (the budget is tested on the binary: test/e2e
		// TestMemoryBudget).
		Ingest: config.IngestConfig{MaxInFlight: 512, SessionConcurrency: 4, LeaseTTL: 3 * time.Second, MissingRecordingTTL: time.Minute,
			MemoryBudget: config.MemoryBudget{Mode: config.BudgetOff}},
		Storage:         filepath.Join(dir, "storage"),
		Batch:           200,
		StartTime:       from.Add(-time.Minute).UTC().Truncate(time.Second),
		Timeout:         200 * time.Millisecond,
		ExitOnLastEvent: true,
		Concurrency:     4,
		WindowSize:      24 * time.Hour,
	}
	return &env{t: t, sim: sim, cfg: cfg, dir: dir}
}

// run runs ingest to completion (exit-on-last-event) within a deadline.
func (e *env) run(log zerolog.Logger) error {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return Run(ctx, e.cfg, log)
}

// contents is what a stream holds: message count per Nats-Msg-Id, and the
// ids of trimmed messages.
type contents struct {
	msgs    int
	ids     map[string]int
	trimmed []string
	types   map[string]int
}

// open opens the bus of e's storage directory (the embedded server), for
// checking what ingest left in it.
func (e *env) open() *bus.Bus {
	e.t.Helper()
	b := e.openUntilClosed()
	e.t.Cleanup(b.Close)
	return b
}

// openUntilClosed is open for a caller that closes the bus itself, before
// ingest runs on the storage again.
func (e *env) openUntilClosed() *bus.Bus {
	e.t.Helper()
	nc := e.cfg.NATS
	nc.Listen = "127.0.0.1:0"
	b, err := bus.Open(context.Background(), nc, e.cfg.Storage, "test", zerolog.Nop(), true)
	if err != nil {
		e.t.Fatalf("open storage: %v", err)
	}
	return b
}

// read reads a whole stream.
func read(t *testing.T, js jetstream.JetStream, stream string) contents {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := contents{ids: map[string]int{}, types: map[string]int{}}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	total := s.CachedInfo().State.Msgs
	if total == 0 {
		return c
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("consumer on %s: %v", stream, err)
	}
	for uint64(c.msgs) < total {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetch from %s: %v", stream, err)
		}
		for m := range batch.Messages() {
			c.msgs++
			h := m.Headers()
			c.ids[h.Get(bus.HeaderMsgID)]++
			c.types[h.Get(bus.HeaderEventType)]++
			if h.Get(bus.HeaderTrimmed) == "true" {
				c.trimmed = append(c.trimmed, h.Get(bus.HeaderMsgID))
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("fetch from %s: %v", stream, err)
		}
	}
	return c
}

// exactlyOnce checks that the stream holds each wanted id once and
// nothing else.
func exactlyOnce(t *testing.T, what string, got contents, want []string) {
	t.Helper()
	missing, dup := 0, 0
	wanted := map[string]bool{}
	for _, id := range want {
		wanted[id] = true
		switch n := got.ids[id]; {
		case n == 0:
			missing++
			if missing <= 3 {
				t.Errorf("%s: event %s missing", what, id)
			}
		case n > 1:
			dup++
			if dup <= 3 {
				t.Errorf("%s: event %s stored %d times", what, id, n)
			}
		}
	}
	extra := 0
	for id := range got.ids {
		if !wanted[id] {
			extra++
			if extra <= 3 {
				t.Errorf("%s: unexpected event %s", what, id)
			}
		}
	}
	if missing+dup+extra > 0 || got.msgs != len(want) {
		t.Errorf("%s: %d messages for %d events: %d missing, %d duplicated, %d unexpected", what, got.msgs, len(want), missing, dup, extra)
	}
}

// sessionIDs lists the message ids every available recording should
// produce (skipping none).
func sessionIDs(sim *teleportsim.Server) []string {
	var out []string
	for _, s := range sim.Sessions() {
		if s.Missing {
			continue
		}
		for i := 0; i < s.Events; i++ {
			out = append(out, s.ID+"/"+strconv.Itoa(i))
		}
	}
	return out
}

func TestBackfillBulkExport(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 1, Events: 2000, Sessions: 10, From: now.Add(-4 * 24 * time.Hour), To: now})
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
	exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
}

func TestBackfillOlderServer(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 2, Events: 2000, Sessions: 8, From: now.Add(-50 * time.Hour), To: now, Older: true})
	e.cfg.Batch = 100
	e.cfg.WindowSize = 12 * time.Hour
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, want := range []string{"SearchUnstructuredEvents paging", "reading recordings with StreamSessionEvents"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not say which path is used: no %q in\n%s", want, logs)
		}
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
	exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
}

func TestFilters(t *testing.T) {
	t.Parallel()
	for _, older := range []bool{false, true} {
		t.Run(map[bool]string{false: "bulk", true: "search"}[older], func(t *testing.T) {
			now := time.Now().UTC()
			e := newEnv(t, teleportsim.Options{Seed: 3, Events: 1500, Sessions: 5, From: now.Add(-30 * time.Hour), To: now, Older: older})
			e.cfg.Types = []string{"user.login", "db.session.query", "kube.request"}
			e.cfg.SkipEventTypes = []string{"kube.request"}
			e.cfg.SkipSessionTypes = []string{"print"}
			if err := e.run(zerolog.Nop()); err != nil {
				t.Fatalf("Run: %v", err)
			}
			b := e.open()
			got := read(t, b.JS, b.Cfg.AuditStream)
			want := e.sim.CountsByType()
			if len(got.types) != 2 || got.types["user.login"] != want["user.login"] || got.types["db.session.query"] != want["db.session.query"] {
				t.Errorf("audit stream holds %v; want only user.login=%d and db.session.query=%d", got.types, want["user.login"], want["db.session.query"])
			}
			// session.upload is filtered out, so no recording is read.
			if s := read(t, b.JS, b.Cfg.SessionStream); s.msgs != 0 {
				t.Errorf("session stream holds %d messages; want none (session.upload not selected)", s.msgs)
			}
		})
	}
}

func TestSkipSessionTypes(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 4, Events: 300, Sessions: 6, From: now.Add(-5 * time.Hour), To: now})
	e.cfg.SkipSessionTypes = []string{"print"}
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	b := e.open()
	got := read(t, b.JS, b.Cfg.SessionStream)
	if got.msgs == 0 || got.types["print"] != 0 {
		t.Errorf("session stream holds %v; want recordings without print events", got.types)
	}
}

func TestStragglersAndSingleEventChunks(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 5, Events: 1200, Sessions: 3, From: now.Add(-70 * time.Hour), To: now})
	single := 0
	for d := utcDate(e.cfg.StartTime); !d.After(now); d = d.AddDate(0, 0, 1) {
		for _, n := range e.sim.ExportChunks(d) {
			if n == 1 {
				single++
			}
		}
	}
	if single == 0 {
		t.Fatal("the double made no single-event chunk; the test needs one")
	}
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	yesterday := utcDate(now).AddDate(0, 0, -1)
	for _, add := range []struct {
		date time.Time
		n    int
	}{{yesterday, 1}, {yesterday.AddDate(0, 0, -1), 7}} {
		if _, err := e.sim.AddStraggler(add.date, add.n); err != nil {
			t.Fatalf("add straggler: %v", err)
		}
	}
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}

func TestSessionsUploadLagMissingAndOversize(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{
		Seed: 6, Events: 240, Sessions: 16, HugeEvents: 4, From: now.Add(-20 * time.Second), To: now,
		UploadLag: 1500 * time.Millisecond, MissingRecordingRate: 0.25,
	})
	e.cfg.Ingest.MissingRecordingTTL = 4 * time.Second
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	b := e.open()
	audit := read(t, b.JS, b.Cfg.AuditStream)
	exactlyOnce(t, "audit stream", audit, e.sim.AllEventIDs())
	sess := read(t, b.JS, b.Cfg.SessionStream)
	exactlyOnce(t, "session stream", sess, sessionIDs(e.sim))
	if len(audit.trimmed)+len(sess.trimmed) == 0 {
		t.Errorf("no message carries %s: true; the double made oversized events", bus.HeaderTrimmed)
	}
	if n := strings.Count(logs.String(), "largest fields trimmed"); n != len(audit.trimmed)+len(sess.trimmed) {
		t.Errorf("%d trim log lines for %d trimmed messages", n, len(audit.trimmed)+len(sess.trimmed))
	}
	missing := 0
	for _, s := range e.sim.Sessions() {
		if s.Missing {
			missing++
		}
	}
	if n := strings.Count(logs.String(), "session recording given up"); n != missing {
		t.Errorf("%d recordings given up; the double has %d missing", n, missing)
	}
	if missing == 0 {
		t.Error("the double made no missing recording; the test needs one")
	}
}

func TestStartTimeChangeIsAnError(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 7, Events: 50, From: now.Add(-time.Hour), To: now})
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	first := e.cfg.StartTime
	e.cfg.StartTime = first.Add(30 * time.Minute)
	err := e.run(zerolog.Nop())
	if !errors.Is(err, position.ErrStartTimeChanged) {
		t.Fatalf("second Run with another start-time: %v; want position.ErrStartTimeChanged", err)
	}
	for _, want := range []string{first.Format(time.RFC3339), e.cfg.StartTime.Format(time.RFC3339), "reset"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	e.cfg.StartTime = time.Time{} // unset: the stored value is used
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run without start-time after the first run: %v", err)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 8, Events: 400, Sessions: 3, From: now.Add(-26 * time.Hour), To: now})
	e.cfg.DryRun = true
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := strings.Count(logs.String(), `"subject":"audit.`); n != len(e.sim.AllEventIDs()) {
		t.Errorf("dry run logged %d audit events; the double holds %d", n, len(e.sim.AllEventIDs()))
	}
	if n := strings.Count(logs.String(), `"subject":"session.`); n != len(sessionIDs(e.sim)) {
		t.Errorf("dry run logged %d session events; want %d", n, len(sessionIDs(e.sim)))
	}
	m, err := filepath.Glob(filepath.Join(e.cfg.Storage, "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 0 {
		t.Errorf("dry run wrote into the storage directory: %v", m)
	}
}

func TestStatusShowsStreamsProgressSessionsAndLease(t *testing.T) {
	// Whole days up to yesterday, so the newest date has events whatever
	// the time of day (just after midnight, today has none yet).
	today := utcDate(time.Now())
	yesterday := today.AddDate(0, 0, -1)
	e := newEnv(t, teleportsim.Options{Seed: 11, Events: 300, Sessions: 4, From: today.AddDate(0, 0, -5), To: today.Add(-time.Minute)})
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var out bytes.Buffer
	if err := Status(context.Background(), e.cfg, &out); err != nil {
		t.Fatalf("Status: %v", err)
	}
	text := out.String()
	total := len(e.sim.AllEventIDs())
	for _, want := range []string{
		"AUDIT", "SESSIONS", strconv.Itoa(total),
		yesterday.Format(time.DateOnly), "Start time: " + e.cfg.StartTime.Format(time.RFC3339),
		"Session jobs: 4 done, 0 given up, 0 pending", "Lease: free", "closed", "open",
		"Caught up: ", bus.DefaultAuditStream + " to " + strconv.Itoa(total),
		"Stream TELEPORT_AUDIT: positions belong to the stream created ", "acknowledged up to sequence " + strconv.Itoa(total),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status output lacks %q:\n%s", want, text)
		}
	}
}

func TestExitOnLastEventDoesNotWaitDaysForMissingRecordings(t *testing.T) {
	defer func(g time.Duration) { drainGrace = g }(drainGrace)
	drainGrace = time.Second
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 15, Events: 60, Sessions: 10, From: now.Add(-time.Hour), To: now, MissingRecordingRate: 0.4})
	e.cfg.Ingest.MissingRecordingTTL = 48 * time.Hour
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	missing := 0
	for _, s := range e.sim.Sessions() {
		if s.Missing {
			missing++
		}
	}
	if missing == 0 {
		t.Fatal("the double made no missing recording")
	}
	if !strings.Contains(logs.String(), `"sessions":`+strconv.Itoa(missing)+`,"message":"exiting with session recordings still missing`) {
		t.Errorf("no log line about %d missing recordings:\n%s", missing, logs)
	}
	var out bytes.Buffer
	if err := Status(context.Background(), e.cfg, &out); err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(missing) + " pending"; !strings.Contains(out.String(), want) {
		t.Errorf("status does not show %q:\n%s", want, out.String())
	}
}

func TestCursorStartsSearchPagingThere(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 17, Events: 300, From: now.Add(-3 * time.Hour), To: now})
	src, err := teleport.Connect(context.Background(), e.cfg.Teleport, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	first, next, err := src.SearchUnstructuredEvents(context.Background(), e.cfg.StartTime, now.Add(time.Minute),
		teleport.Namespace, nil, 100, types.EventOrderAscending, "")
	_ = src.Close()
	if err != nil || next == "" || len(first) != 100 {
		t.Fatalf("first page: %d events, next %q, %v", len(first), next, err)
	}
	e.cfg.Cursor = next
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(logs.String(), "SearchUnstructuredEvents from the given cursor") {
		t.Errorf("log does not say the cursor path is used:\n%s", logs)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs()[100:])
}

// utcDate is midnight UTC of t's date.
func utcDate(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}
