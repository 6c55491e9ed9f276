package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// shared starts a NATS server the test owns, so it outlives ingest runs,
// and points e's configuration at it.
func (e *env) shared() *bus.Bus {
	e.t.Helper()
	emb, err := bus.StartEmbedded(context.Background(), bus.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: e.cfg.Storage, Log: zerolog.Nop()})
	if err != nil {
		e.t.Fatalf("start NATS: %v", err)
	}
	e.t.Cleanup(emb.Shutdown)
	e.cfg.NATS.URL = emb.ClientURL()
	b, err := bus.Open(context.Background(), e.cfg.NATS, "", "test", zerolog.Nop(), false)
	if err != nil {
		e.t.Fatalf("connect to NATS: %v", err)
	}
	e.t.Cleanup(b.Close)
	return b
}

// count is how many messages a stream holds (0 before it exists).
func count(b *bus.Bus, stream string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := b.JS.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// until polls cond every 5 ms until it holds or done is closed; it
// reports whether cond held.
func until(done <-chan error, deadline time.Duration, cond func() bool) bool {
	end := time.Now().Add(deadline)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		select {
		case <-done:
			return false
		case <-t.C:
		}
	}
	return false
}

// TestRestartAfterCancelExactlyOnce stops ingest at many points of a
// backfill, on the bulk export path and on the search path (a file-log
// Teleport, small pages fetched ahead, six daily windows).
func TestRestartAfterCancelExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, older := range []bool{false, true} {
		t.Run(map[bool]string{false: "bulk", true: "search"}[older], func(t *testing.T) {
			t.Parallel()
			testRestartAfterCancel(t, older)
		})
	}
}

func testRestartAfterCancel(t *testing.T, older bool) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 9, Events: 3000, Sessions: 12, From: now.Add(-6 * 24 * time.Hour), To: now, Older: older})
	e.cfg.Concurrency = 3
	e.cfg.Ingest.MaxInFlight = 64
	e.cfg.Ingest.PageSize = 40
	b := e.shared()
	total := uint64(len(e.sim.AllEventIDs()))
	stops := 0
	for _, frac := range []float64{0.02, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, e.cfg, zerolog.Nop()) }()
		target := uint64(frac * float64(total))
		stopped := until(done, 30*time.Second, func() bool { return count(b, b.Cfg.AuditStream) >= target })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run stopped at %.0f%%: %v", frac*100, err)
		}
		if stopped {
			stops++
		}
	}
	if stops < 4 {
		t.Errorf("only %d runs were stopped mid-backfill; the test did not exercise restarts", stops)
	}
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("final Run: %v", err)
	}
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
	exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
	if !older {
		statusCountsStream(t, e, b)
	}
}

// statusCountsStream checks that `ingest status`'s per-date EVENTS add up
// to the audit stream's count: the events a stopped attempt published but
// saved no position for are counted by the attempt that finds them on the
// bus.
func statusCountsStream(t *testing.T, e *env, b *bus.Bus) {
	t.Helper()
	var out bytes.Buffer
	if err := Status(context.Background(), e.cfg, &out); err != nil {
		t.Fatalf("Status: %v", err)
	}
	sum, err := harness.DateEventsTotal(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := count(b, b.Cfg.AuditStream); uint64(sum) != n {
		t.Errorf("ingest status's EVENTS add up to %d, the audit stream holds %d:\n%s", sum, n, out.String())
	}
}

func TestStandbyTakesOver(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 10, Events: 800, Sessions: 4, From: now.Add(-50 * time.Hour), To: now})
	e.cfg.Ingest.LeaseTTL = 2 * time.Second
	b := e.shared()
	if err := e.run(zerolog.Nop()); err != nil {
		t.Fatalf("first ingest: %v", err)
	}
	kv, err := b.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Another ingest leads: it holds the lease and renews it every third of
	// the TTL. Its clock is an hour behind ours, so every expiry it writes
	// has passed by our clock: the standby must wait all the same.
	setLease := func() error {
		v, err := json.Marshal(leaseValue{Holder: "leader", Expires: time.Now().Add(-time.Hour)})
		if err != nil {
			return err
		}
		_, err = kv.Put(context.Background(), keyLease, v)
		return err
	}
	if err := setLease(); err != nil {
		t.Fatal(err)
	}
	stopRenewing, renewed := make(chan struct{}), make(chan error, 1)
	go func() {
		tick := time.NewTicker(e.cfg.Ingest.LeaseTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-stopRenewing:
				renewed <- nil
				return
			case <-tick.C:
				if err := setLease(); err != nil {
					renewed <- err
					return
				}
			}
		}
	}()

	logs := &logtest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, zerolog.New(logs)) }()
	if !until(done, 10*time.Second, func() bool { return strings.Contains(logs.String(), "standing by") }) {
		t.Fatalf("second ingest did not stand by")
	}
	yesterday := utcDate(now).AddDate(0, 0, -1)
	if _, err := e.sim.AddStraggler(yesterday, 5); err != nil {
		t.Fatal(err)
	}
	hold := time.NewTimer(2 * e.cfg.Ingest.LeaseTTL)
	select {
	case err := <-done:
		t.Fatalf("the standby took over from a leader renewing its lease (Run returned %v)", err)
	case <-hold.C:
	}
	if n := count(b, b.Cfg.AuditStream); n != 800 {
		t.Fatalf("the standby published while the lease was held: %d messages", n)
	}

	// The leader is killed right after a renewal: its lease is never
	// renewed again.
	close(stopRenewing)
	if err := <-renewed; err != nil {
		t.Fatalf("renewing the leader's lease: %v", err)
	}
	died := time.Now()
	if err := <-done; err != nil {
		t.Fatalf("standby: %v", err)
	}
	if took := time.Since(died); took > 15*time.Second {
		t.Errorf("standby finished %s after the leader died; want within 15s", took)
	}
	if !strings.Contains(logs.String(), "ingest lease acquired") {
		t.Errorf("standby never said it took over")
	}
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
	exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
	statusCountsStream(t, e, b)
}

func TestTeleportFaultsLoseNothing(t *testing.T) {
	t.Parallel()
	for _, older := range []bool{false, true} {
		t.Run(map[bool]string{false: "bulk", true: "search"}[older], func(t *testing.T) {
			now := time.Now().UTC()
			e := newEnv(t, teleportsim.Options{
				Seed: 12, Events: 400, Sessions: 3, From: now.Add(-40 * time.Hour), To: now, Older: older,
				Faults: teleportsim.Faults{UnavailableRate: 0.1, RateLimitRate: 0.05, CutAfter: 40},
			})
			logs := &logtest.Buffer{}
			if err := e.run(zerolog.New(logs)); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if injected := e.sim.InjectedErrors(); len(injected) == 0 {
				t.Fatal("the double injected no fault")
			}
			if !strings.Contains(logs.String(), "retrying") {
				t.Error("no retry was logged")
			}
			b := e.open()
			exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
			exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
		})
	}
}

func TestMetricsAndHealthEndpoints(t *testing.T) {
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 13, Events: 200, From: now.Add(-2 * time.Hour), To: now})
	get := e.endpoint()
	e.cfg.ExitOnLastEvent = false
	// One event in flight: each publish waits for the PubAck before it,
	// which publish_wait_seconds_total{reason="in_flight"} counts.
	e.cfg.Ingest.MaxInFlight = 1
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, zerolog.Nop()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	want := `teleport_event_bus_ingest_events_published_total{type="user.login"}`
	if !until(done, 20*time.Second, func() bool { _, body := get("/metrics"); return strings.Contains(body, want) }) {
		_, body := get("/metrics")
		t.Fatalf("/metrics never showed %s:\n%s", want, body)
	}
	sum := 0
	if !until(done, 10*time.Second, func() bool {
		_, body := get("/metrics")
		sum = 0
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "teleport_event_bus_ingest_events_published_total{") {
				n, err := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
				if err != nil {
					t.Fatalf("metrics line %q: %v", line, err)
				}
				sum += n
			}
		}
		return sum == 200
	}) {
		t.Errorf("published counters sum to %d; want 200", sum)
	}
	_, body := get("/metrics")
	const inFlight = `teleport_event_bus_ingest_publish_wait_seconds_total{reason="in_flight"} `
	if i := strings.Index(body, inFlight); i < 0 {
		t.Errorf("/metrics has no %s line:\n%s", inFlight, body)
	} else if line, _, _ := strings.Cut(body[i+len(inFlight):], "\n"); line == "0" {
		t.Errorf("%s is 0 after 200 events published one at a time", inFlight)
	} else if _, err := strconv.ParseFloat(line, 64); err != nil {
		t.Errorf("%s%s: %v", inFlight, line, err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(path); code != http.StatusOK {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	if _, body := get("/metrics"); !strings.Contains(body, "teleport_event_bus_ingest_leader 1") {
		t.Error("leader gauge is not 1 while leading")
	}
}

func TestLeaderThatLosesTheLeaseStandsBy(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 16, Events: 100, From: now.Add(-time.Hour), To: now})
	e.cfg.ExitOnLastEvent = false
	e.cfg.Ingest.LeaseTTL = time.Second
	b := e.shared()
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, zerolog.New(logs)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	if !until(done, 20*time.Second, func() bool { return count(b, b.Cfg.AuditStream) == 100 }) {
		t.Fatal("backfill not exported")
	}
	kv, err := b.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Another process takes the lease, then dies without renewing it. Its
	// clock ran an hour ahead: the expiry it wrote is an hour away, and the
	// lease must come back after one TTL all the same.
	v, err := json.Marshal(leaseValue{Holder: "intruder", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), keyLease, v); err != nil {
		t.Fatal(err)
	}
	if !until(done, 10*time.Second, func() bool { return strings.Contains(logs.String(), "stopped reading; standing by") }) {
		t.Fatalf("the leader kept reading after losing the lease:\n%s", logs)
	}
	if !until(done, 10*time.Second, func() bool { return strings.Count(logs.String(), "ingest lease acquired") == 2 }) {
		t.Fatalf("the lease was not taken back after it expired:\n%s", logs)
	}
}

func TestTeleportRestartMidBackfill(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{Seed: 18, Events: 2000, Sessions: 6, From: now.Add(-4 * 24 * time.Hour), To: now,
		Faults: teleportsim.Faults{Latency: 2 * time.Millisecond}})
	e.cfg.Ingest.MaxInFlight = 32
	b := e.shared()
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.cfg, zerolog.New(logs)) }()
	restarted := until(done, 30*time.Second, func() bool { return count(b, b.Cfg.AuditStream) >= 600 })
	if restarted {
		if err := e.sim.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !restarted {
		t.Fatal("the backfill finished before the restart; the test did not restart Teleport mid-way")
	}
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
	exactlyOnce(t, "session stream", read(t, b.JS, b.Cfg.SessionStream), sessionIDs(e.sim))
	statusCountsStream(t, e, b)
}

// TestCutStreamsDoNotGrowTheBackoff: a stream cut after progress is not a
// failure in a row, so the wait before resuming stays at the first step
// however many cuts a chunk takes.
func TestCutStreamsDoNotGrowTheBackoff(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	e := newEnv(t, teleportsim.Options{
		Seed: 21, Events: 600, From: now.Add(-2 * time.Hour), To: now, ChunksPerDate: 1,
		Faults: teleportsim.Faults{CutAfter: 60},
	})
	logs := &logtest.Buffer{}
	if err := e.run(zerolog.New(logs)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	retries := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "export chunk failed, retrying") {
			continue
		}
		retries++
		var entry struct {
			RetryIn float64 `json:"retry_in"` // milliseconds
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if entry.RetryIn > 500 {
			t.Errorf("retry %d waits %.0f ms after a cut that made progress; want the first step (<= 500 ms)", retries, entry.RetryIn)
		}
	}
	if retries < 5 {
		t.Fatalf("%d cuts retried; the double should cut the chunk many times", retries)
	}
	b := e.open()
	exactlyOnce(t, "audit stream", read(t, b.JS, b.Cfg.AuditStream), e.sim.AllEventIDs())
}
