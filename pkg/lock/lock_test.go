package lock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// grpc and nats keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// waitTimeout bounds every wait for the watcher.
const waitTimeout = 20 * time.Second

// env is one test's Teleport double, Teleport client and bus.
type env struct {
	t       *testing.T
	sim     *teleportsim.Server
	tp      *teleport.Client
	storage string
	b       *bus.Bus
}

func newEnv(t *testing.T, opts teleportsim.Options) *env {
	t.Helper()
	ctx := t.Context()
	sim, err := teleportsim.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start teleport double: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	dir := t.TempDir()
	id, err := sim.WriteIdentity(dir, "ingest", time.Hour)
	if err != nil {
		t.Fatalf("write identity: %v", err)
	}
	tp, err := teleport.Connect(ctx, config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id, ConnectRetries: 3}, zerolog.Nop())
	if err != nil {
		t.Fatalf("connect to teleport double: %v", err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	e := &env{t: t, sim: sim, tp: tp, storage: filepath.Join(dir, "storage")}
	e.openBus()
	return e
}

// openBus starts the embedded NATS server on e's storage directory.
func (e *env) openBus() {
	e.t.Helper()
	b, err := bus.Open(e.t.Context(), config.NATSConfig{Listen: "127.0.0.1:0"}, e.storage, "lock-test", zerolog.Nop(), true)
	if err != nil {
		e.t.Fatalf("open bus: %v", err)
	}
	e.t.Cleanup(b.Close)
	if err := b.EnsureStreams(e.t.Context()); err != nil {
		e.t.Fatalf("ensure streams: %v", err)
	}
	e.b = b
}

// watcher is a running Watcher and how to stop it.
type watcher struct {
	*Watcher
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, set before done is closed
}

// halt stops the watcher and waits for Run to return.
func (w *watcher) halt() error {
	w.cancel()
	<-w.done
	return w.err
}

// stop stops the watcher and checks Run returned nil.
func (w *watcher) stop(t *testing.T) {
	t.Helper()
	if err := w.halt(); err != nil {
		t.Errorf("Run returned %v, want nil after cancel", err)
	}
}

// start creates and runs a watcher; the test stops it at the latest at
// cleanup.
func (e *env) start(tp Locker, opts Options) *watcher {
	e.t.Helper()
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.RetryBase == 0 {
		opts.RetryBase, opts.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	}
	w, err := New(e.t.Context(), e.b, tp, opts)
	if err != nil {
		e.t.Fatalf("new watcher: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &watcher{Watcher: w, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = w.Run(ctx)
	}()
	e.t.Cleanup(func() { _ = r.halt() })
	return r
}

// login publishes a user.login event the way ingest does.
func (e *env) login(id, user, login string, at time.Time, success bool) {
	e.t.Helper()
	e.publish(id, user, login, at, success, id)
}

func (e *env) publish(id, user, login string, at time.Time, success bool, msgID string) {
	e.t.Helper()
	code := "T1000I"
	if !success {
		code = "T1001W"
	}
	body, err := json.Marshal(map[string]any{
		"event": "user.login", "code": code, "uid": id, "time": at.UTC().Format("2006-01-02T15:04:05.000Z"),
		"user": user, "login": login, "success": success, "method": "local",
	})
	if err != nil {
		e.t.Fatal(err)
	}
	m := bus.NewMsg(bus.Event{ID: id, Type: "user.login", Time: at, JSON: body})
	m.Header.Set(bus.HeaderMsgID, msgID)
	if _, err := e.b.JS.PublishMsg(e.t.Context(), m); err != nil {
		e.t.Fatalf("publish %s: %v", id, err)
	}
}

// idle waits until the watcher's consumer has every login event
// acknowledged.
func (e *env) idle(durable string) {
	e.t.Helper()
	if durable == "" {
		durable = DefaultDurable
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		c, err := e.b.JS.Consumer(e.t.Context(), e.b.Cfg.AuditStream, durable)
		if err != nil {
			e.t.Fatalf("look up consumer: %v", err)
		}
		info, err := c.Info(e.t.Context())
		if err != nil {
			e.t.Fatalf("consumer info: %v", err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("consumer not idle after %s: %d pending, %d awaiting ack", waitTimeout, info.NumPending, info.NumAckPending)
		}
		pause(20 * time.Millisecond)
	}
}

// pause lets time pass between polls.
func pause(d time.Duration) {
	<-time.After(d)
}

// locksOf returns the locks the Teleport double holds for user.
func (e *env) locksOf(user string) []types.Lock {
	var out []types.Lock
	for _, l := range e.sim.Locks() {
		if l.Target().User == user {
			out = append(out, l)
		}
	}
	return out
}

// counterOf reads the stored counter of user and login.
func (e *env) counterOf(user, login string) counter {
	e.t.Helper()
	kv, err := e.b.State(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	c, _, err := counters{kv: kv}.get(e.t.Context(), bus.LockCounterKey(user, login))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatalf("read counter: %v", err)
	}
	return m.GetCounter().GetValue()
}

func lockCfg(lockFor time.Duration) config.LockConfig {
	return config.LockConfig{Enabled: true, FailedAttemptsCount: 3, Period: time.Minute, For: lockFor}
}

func TestThreeFailuresInAMinuteLockTheUser(t *testing.T) {
	for _, tc := range []struct {
		name    string
		login   string
		lockFor time.Duration
	}{
		{"for ten minutes, with a login", "root", 10 * time.Minute},
		{"forever, without a login", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, teleportsim.Options{})
			m := NewMetrics(nil)
			e.start(e.tp, Options{Lock: lockCfg(tc.lockFor), Metrics: m})
			now := time.Now().UTC()
			before := now
			e.login("a1", "alice", tc.login, now.Add(-50*time.Second), false)
			e.login("b1", "bob", tc.login, now.Add(-45*time.Second), false)
			e.login("a2", "alice", tc.login, now.Add(-30*time.Second), false)
			e.login("a3", "alice", tc.login, now.Add(-10*time.Second), false)
			e.login("b2", "bob", tc.login, now.Add(-5*time.Second), true)
			e.idle("")
			after := time.Now()

			locks := e.locksOf("alice")
			if len(locks) != 1 {
				t.Fatalf("alice has %d locks, want 1 (all locks: %v)", len(locks), e.sim.Locks())
			}
			l := locks[0]
			if want := (types.LockTarget{User: "alice", Login: tc.login}); !l.Target().Equals(want) {
				t.Errorf("lock target %v, want %v", l.Target(), want)
			}
			if !strings.Contains(l.Message(), "3 failed logins within 1m0s") {
				t.Errorf("lock message %q does not say why", l.Message())
			}
			if !strings.HasPrefix(l.GetName(), lockNamePrefix) {
				t.Errorf("lock name %q does not start with %q", l.GetName(), lockNamePrefix)
			}
			exp := l.LockExpiry()
			switch {
			case tc.lockFor == 0 && exp != nil:
				t.Errorf("lock expires at %s; lock.for 0 means no expiry", exp)
			case tc.lockFor > 0 && exp == nil:
				t.Errorf("lock has no expiry; want now + %s", tc.lockFor)
			case tc.lockFor > 0 && (exp.Before(before.Add(tc.lockFor)) || exp.After(after.Add(tc.lockFor))):
				t.Errorf("lock expires at %s, want between %s and %s", exp, before.Add(tc.lockFor), after.Add(tc.lockFor))
			}
			if n := len(e.locksOf("bob")); n != 0 {
				t.Errorf("bob, with one failure, has %d locks", n)
			}
			if got := value(t, m.FailedLogins); got != 4 {
				t.Errorf("failed_logins_total %v, want 4", got)
			}
			if got := value(t, m.Locks); got != 1 {
				t.Errorf("locks_total %v, want 1", got)
			}
		})
	}
}

func TestTwoFailuresDoNotLock(t *testing.T) {
	e := newEnv(t, teleportsim.Options{})
	e.start(e.tp, Options{Lock: lockCfg(0)})
	now := time.Now().UTC()
	e.login("a1", "alice", "root", now.Add(-20*time.Second), false)
	e.login("a2", "alice", "root", now.Add(-10*time.Second), false)
	e.idle("")
	if locks := e.locksOf("alice"); len(locks) != 0 {
		t.Errorf("alice locked after 2 failures: %v", locks)
	}
	if c := e.counterOf("alice", "root"); len(c.Failures) != 2 {
		t.Errorf("stored counter holds %d failures, want 2", len(c.Failures))
	}
}

func TestFailuresSpreadOverMoreThanThePeriodDoNotLock(t *testing.T) {
	e := newEnv(t, teleportsim.Options{})
	e.start(e.tp, Options{Lock: lockCfg(0)})
	t0 := time.Now().UTC().Add(-3 * time.Minute)
	// 45 s apart: any three span 90 s. Published out of order, as
	// export chunks deliver them.
	e.login("a3", "alice", "", t0.Add(90*time.Second), false)
	e.login("a1", "alice", "", t0, false)
	e.login("a4", "alice", "", t0.Add(135*time.Second), false)
	e.login("a2", "alice", "", t0.Add(45*time.Second), false)
	e.idle("")
	if locks := e.locksOf("alice"); len(locks) != 0 {
		t.Fatalf("alice locked for failures 45 s apart with a 1 minute period: %v", locks)
	}
	// A late event at +100 s puts three failures (45, 90, 100) within 55 s.
	e.login("a5", "alice", "", t0.Add(100*time.Second), false)
	e.idle("")
	locks := e.locksOf("alice")
	if len(locks) != 1 {
		t.Fatalf("alice has %d locks after three failures within 55 s, want 1", len(locks))
	}
	from, to := t0.Add(45*time.Second).Format(time.RFC3339), t0.Add(100*time.Second).Format(time.RFC3339)
	if msg := locks[0].Message(); !strings.Contains(msg, from) || !strings.Contains(msg, to) {
		t.Errorf("lock message %q does not name the window %s to %s", msg, from, to)
	}
}

func TestFailuresCountAcrossARestart(t *testing.T) {
	e := newEnv(t, teleportsim.Options{})
	w := e.start(e.tp, Options{Lock: lockCfg(0)})
	now := time.Now().UTC()
	e.login("a1", "alice", "root", now.Add(-40*time.Second), false)
	e.login("a2", "alice", "root", now.Add(-30*time.Second), false)
	e.idle("")
	w.stop(t)
	// Stop the NATS server too and start a new one on the same storage.
	e.b.Close()
	e.openBus()
	e.start(e.tp, Options{Lock: lockCfg(0)})
	e.login("a3", "alice", "root", now.Add(-20*time.Second), false)
	e.idle("")
	if locks := e.locksOf("alice"); len(locks) != 1 {
		t.Errorf("alice has %d locks after 2 failures, a restart and a third failure; want 1", len(locks))
	}
}

// flakyLocker fails the first fail calls with Unavailable, then passes
// calls on.
type flakyLocker struct {
	Locker
	mu    sync.Mutex
	fail  int
	calls int
}

func (f *flakyLocker) UpsertLock(ctx context.Context, l types.Lock) error {
	f.mu.Lock()
	f.calls++
	failing := f.fail > 0
	if failing {
		f.fail--
	}
	f.mu.Unlock()
	if failing {
		return status.Error(codes.Unavailable, "teleport restarting")
	}
	return f.Locker.UpsertLock(ctx, l)
}

func TestRedeliveredMessagesDoNotDoubleCount(t *testing.T) {
	e := newEnv(t, teleportsim.Options{})
	flaky := &flakyLocker{Locker: e.tp}
	m := NewMetrics(nil)
	e.start(flaky, Options{Lock: lockCfg(0), Metrics: m})
	flaky.mu.Lock()
	flaky.fail = 2 // the first two lock attempts fail: the third failure is redelivered twice
	flaky.calls = 0
	flaky.mu.Unlock()

	now := time.Now().UTC()
	e.login("a1", "alice", "root", now.Add(-40*time.Second), false)
	e.login("a2", "alice", "root", now.Add(-30*time.Second), false)
	// The same event published again under another message id: the
	// stream's dedup does not catch it, the counter must.
	e.publish("a2", "alice", "root", now.Add(-30*time.Second), false, "a2-again")
	e.idle("")
	if locks := e.locksOf("alice"); len(locks) != 0 {
		t.Fatalf("alice locked after 2 distinct failures (one delivered twice): %v", locks)
	}
	e.login("a3", "alice", "root", now.Add(-20*time.Second), false)
	e.idle("")

	if locks := e.locksOf("alice"); len(locks) != 1 {
		t.Errorf("alice has %d locks, want 1", len(locks))
	}
	if got := value(t, m.Errors.WithLabelValues("upsert_lock")); got != 2 {
		t.Errorf("errors_total{op=upsert_lock} %v, want 2", got)
	}
	if got := value(t, m.FailedLogins); got != 3 {
		t.Errorf("failed_logins_total %v, want 3 (each event once, however often delivered)", got)
	}
	if got := value(t, m.Locks); got != 1 {
		t.Errorf("locks_total %v, want 1", got)
	}
	flaky.mu.Lock()
	calls := flaky.calls
	flaky.mu.Unlock()
	if calls != 3 {
		t.Errorf("%d lock attempts after the start-up check, want 3 (2 failed, 1 placed)", calls)
	}
	c := e.counterOf("alice", "root")
	if len(c.Failures) != 3 {
		t.Errorf("stored counter holds %d failures, want 3", len(c.Failures))
	}
	for _, f := range c.Failures {
		if f.Lock == "" {
			t.Errorf("failure %s not marked as locked", f.ID)
		}
	}
}

func TestResetOnSuccess(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprint("reset-on-success=", reset), func(t *testing.T) {
			e := newEnv(t, teleportsim.Options{})
			cfg := lockCfg(0)
			cfg.ResetOnSuccess = reset
			e.start(e.tp, Options{Lock: cfg})
			now := time.Now().UTC()
			e.login("a1", "alice", "", now.Add(-40*time.Second), false)
			e.login("a2", "alice", "", now.Add(-30*time.Second), false)
			e.login("ok", "alice", "", now.Add(-25*time.Second), true)
			e.login("a3", "alice", "", now.Add(-20*time.Second), false)
			e.idle("")
			want := 1
			if reset {
				want = 0
			}
			if got := len(e.locksOf("alice")); got != want {
				t.Errorf("alice has %d locks after fail, fail, success, fail; want %d", got, want)
			}
		})
	}
}

func TestMissingLockPermissionFailsAtStartUp(t *testing.T) {
	e := newEnv(t, teleportsim.Options{DenyLocks: true})
	_, err := New(t.Context(), e.b, e.tp, Options{Lock: lockCfg(0)})
	if !errors.Is(err, ErrNoLockPermission) {
		t.Fatalf("New with a role that cannot lock: %v, want ErrNoLockPermission", err)
	}
	for _, want := range []string{"lock.enabled", "[lock]", "create, update", "configure --lock"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	c, err := e.b.JS.Consumer(t.Context(), e.b.Cfg.AuditStream, DefaultDurable)
	if err == nil {
		t.Errorf("consumer %q created although start-up failed", c.CachedInfo().Name)
	}
}

func TestPermissionCheckLockIsNeverInForce(t *testing.T) {
	e := newEnv(t, teleportsim.Options{})
	if err := CheckPermission(t.Context(), e.tp, time.Now()); err != nil {
		t.Fatalf("check permission: %v", err)
	}
	locks := e.locksOf(PermissionCheckUser)
	if len(locks) != 1 {
		t.Fatalf("%d probe locks, want 1", len(locks))
	}
	if locks[0].IsInForce(time.Now()) {
		t.Error("the permission check lock is in force")
	}
}

func TestBadSettingsAreNamed(t *testing.T) {
	_, err := New(t.Context(), &bus.Bus{}, nil, Options{Lock: config.LockConfig{Enabled: true, FailedAttemptsCount: 0, Period: 0, For: -time.Second}})
	if err == nil {
		t.Fatal("New accepted a zero count, a zero period and a negative lock.for")
	}
	for _, key := range []string{"lock.failed-attempts-count", "lock.period", "lock.for"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
}

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		enabled, dry, want bool
	}{{false, false, false}, {true, false, true}, {true, true, false}} {
		cfg := &config.Config{Lock: config.LockConfig{Enabled: tc.enabled}, DryRun: tc.dry}
		if got := Enabled(cfg); got != tc.want {
			t.Errorf("Enabled(lock.enabled=%v, dry-run=%v) = %v, want %v", tc.enabled, tc.dry, got, tc.want)
		}
	}
	if Enabled(nil) {
		t.Error("Enabled(nil) is true")
	}
}

func TestOldFailuresAreNotCounted(t *testing.T) {
	e := newEnv(t, teleportsim.Options{})
	m := NewMetrics(nil)
	e.start(e.tp, Options{Lock: lockCfg(0), Metrics: m})
	old := time.Now().UTC().Add(-2 * time.Hour)
	for i := range 3 {
		e.login(fmt.Sprint("old", i), "alice", "", old.Add(time.Duration(i)*time.Second), false)
	}
	e.idle("")
	if locks := e.locksOf("alice"); len(locks) != 0 {
		t.Errorf("alice locked now for failures two hours ago: %v", locks)
	}
	if got := value(t, m.Skipped.WithLabelValues("stale")); got != 3 {
		t.Errorf("skipped_total{reason=stale} %v, want 3", got)
	}
}

func TestConsumerIsSeparateFromTheSink(t *testing.T) {
	e := newEnv(t, teleportsim.Options{})
	w := e.start(e.tp, Options{Lock: lockCfg(0)})
	info := w.cons.CachedInfo()
	if info.Name != DefaultDurable || info.Config.FilterSubject != "audit.user.login" {
		t.Errorf("consumer %q filtering %q, want %q on audit.user.login", info.Name, info.Config.FilterSubject, DefaultDurable)
	}
	if info.Config.MaxDeliver != -1 {
		t.Errorf("consumer gives up after %d deliveries; a lock must be retried until it is placed", info.Config.MaxDeliver)
	}
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	e := newEnv(t, teleportsim.Options{})
	kv, err := e.b.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	key := bus.LockCounterKey("alice", "root")
	const writers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			// The writers' read-modify-write cycles interleave, as those
			// of two ingest processes would.
			s := counters{kv: kv}
			for j := range each {
				f := failure{ID: fmt.Sprintf("w%d-%d", i, j), Time: time.Unix(int64(i*each+j), 0)}
				if _, err := s.update(t.Context(), key, func(c *counter) bool { return c.add(f) }); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("update: %v", err)
	}
	if c := e.counterOf("alice", "root"); len(c.Failures) != writers*each {
		t.Errorf("counter holds %d failures after %d concurrent adds; compare-and-set lost some", len(c.Failures), writers*each)
	}
}
