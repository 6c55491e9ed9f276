package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// skipSessionTypes is the ingest's default skip-session-types.
const skipSessionTypes = "print"

// mb is a megabyte, for RSS figures.
const mb = 1 << 20

// rssLimit bounds the peak RSS of the pipeline's own processes.
const rssLimit = 150 * mb

// embeddedRSSLimit bounds an ingest that runs the embedded NATS server: the
// server's JetStream dedup index (every message id of the duplicate window,
// 2 min by default) and block caches live in the same process. Measured
// 158–242 MB at 100k events; ingest alone stays under rssLimit with an
// external server (see the ingest benchmark).
const embeddedRSSLimit = 300 * mb

// runSpec is what teleport-sim holds for a scenario, and how long the
// scenario may take.
type runSpec struct {
	events, sessions int
	days             int
	// teleport are extra teleport-sim flags (faults, latency, …).
	teleport []string
	timeout  time.Duration
	// forward delivers to fluentd-sim's in_forward instead of in_http.
	forward bool
}

// e2eRun is one scenario: a pipeline in the test's temporary directory with
// teleport-sim and fluentd-sim running, and what it must deliver.
type e2eRun struct {
	t    *testing.T
	ctx  context.Context
	p    *harness.Pipeline
	from time.Time
	want *harness.Expected
	insp *harness.Inspector
	// openBus: ingest runs without NATS credentials, and the inspector
	// connects without a key (nats.go refuses one a server cannot check).
	openBus bool
	// natsURL is set when the pipeline uses a separate NATS server instead
	// of the ingest's embedded one.
	natsURL string
	// others are processes started outside the pipeline (nats-server,
	// audit-tail), for the logs and the RSS figures.
	others []*harness.Proc
}

// procs are every process the scenario started.
func (r *e2eRun) procs() []*harness.Proc {
	return append(slices.Clone(r.p.Procs()), r.others...)
}

// sized picks the CI or the SOAK=1 figure.
func sized[T any](ci, soak T) T {
	if harness.Soak() {
		return soak
	}
	return ci
}

// newE2ERun configures a pipeline and starts teleport-sim and fluentd-sim.
// Everything still running is stopped when the test ends; on failure the
// end of every log is printed and the logs are kept.
func newE2ERun(t *testing.T, spec runSpec) *e2eRun {
	t.Helper()
	if binDir == "" {
		t.Fatal("binaries not built (TestMain did not run)")
	}
	days := max(spec.days, 1)
	ctx, cancel := context.WithTimeout(context.Background(), spec.timeout)
	dir := t.TempDir()
	p, err := harness.NewPipeline(ctx, binDir, dir)
	if err != nil {
		cancel()
		t.Fatalf("configure: %v", err)
	}
	r := &e2eRun{t: t, ctx: ctx, p: p}
	t.Cleanup(func() {
		if r.insp != nil {
			r.insp.Close()
		}
		// The pipeline first, then what it needs (a separate nats-server),
		// newest first.
		bad := p.StopAll(30 * time.Second)
		for i := len(r.others) - 1; i >= 0; i-- {
			proc := r.others[i]
			if exited, _ := proc.Exited(); exited {
				continue
			}
			if code, err := proc.Stop(30 * time.Second); err != nil || code != 0 {
				bad = append(bad, fmt.Sprintf("%s (exit %d, %v)", proc.Name, code, err))
			}
		}
		if len(bad) > 0 {
			t.Errorf("did not stop cleanly: %s", strings.Join(bad, "; "))
		}
		if t.Failed() {
			r.dumpLogs()
		}
		cancel()
	})

	r.from = time.Now().UTC().AddDate(0, 0, -days).Truncate(24 * time.Hour)
	args := append([]string{
		"--events", strconv.Itoa(spec.events),
		"--sessions", strconv.Itoa(spec.sessions),
		"--from", r.from.Format(time.RFC3339),
		"--seed", "1",
	}, spec.teleport...)
	if err := p.StartTeleport(ctx, args...); err != nil {
		t.Fatalf("teleport-sim: %v", err)
	}
	p.Forward = spec.forward
	if err := p.StartFluentd(ctx); err != nil {
		t.Fatalf("fluentd-sim: %v", err)
	}
	if r.want, err = p.Expect(ctx, skipSessionTypes); err != nil {
		t.Fatal(err)
	}
	t.Logf("teleport-sim holds %d audit events, %d sessions, %d session events to deliver",
		len(r.want.AuditIDs), len(r.want.Sessions), r.want.SessionTotal)
	return r
}

// dumpLogs prints the end of every process's log and copies the logs out
// of the temporary directory.
func (r *e2eRun) dumpLogs() {
	seen := make(map[string]bool)
	for _, proc := range r.procs() {
		if seen[proc.LogPath] {
			continue
		}
		seen[proc.LogPath] = true
		lines := strings.Split(proc.Tail(25), "\n")
		for i, l := range lines {
			if len(l) > 600 {
				lines[i] = l[:600] + " …"
			}
		}
		r.t.Log(strings.Join(lines, "\n"))
	}
	keep := filepath.Join(os.TempDir(), "e2e-logs", strings.ReplaceAll(r.t.Name(), "/", "_")+"-"+time.Now().Format("150405"))
	if err := os.CopyFS(keep, os.DirFS(r.p.LogDir)); err == nil {
		r.t.Logf("logs kept in %s", keep)
	}
}

// ingest starts an ingest reading from the scenario's start.
func (r *e2eRun) ingest(name string, extra ...string) *harness.Proc {
	r.t.Helper()
	args := []string{"--start-time", r.from.Format(time.RFC3339)}
	if r.natsURL != "" {
		args = append(args, "--nats-url", r.natsURL)
	}
	proc, err := r.p.StartIngest(r.ctx, name, append(args, extra...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	return proc
}

// sink starts a fluentd-sink once the NATS server answers (the sink does
// not wait for it at start-up).
func (r *e2eRun) sink(name string, extra ...string) *harness.Proc {
	r.t.Helper()
	r.inspector()
	var args []string
	if r.natsURL != "" {
		args = append(args, "--nats-url", r.natsURL)
	}
	proc, err := r.p.StartSink(r.ctx, name, append(args, extra...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	return proc
}

// inspector connects to the bus, waiting for the server to answer.
func (r *e2eRun) inspector() *harness.Inspector {
	r.t.Helper()
	if r.insp != nil {
		return r.insp
	}
	err := harness.WaitFor(r.ctx, "the NATS server", func(ctx context.Context) (bool, string, error) {
		key := r.p.NATSSeed(bus.RoleReader)
		if r.openBus {
			key = ""
		}
		insp, err := harness.NewInspector(ctx, r.natsURL, r.p.NATSListen, key)
		if err != nil {
			return false, "", err
		}
		r.insp = insp
		return true, "", nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return r.insp
}

// busCounts reads the streams' counts (an error while the server restarts
// is returned, not fatal).
func (r *e2eRun) busCounts(ctx context.Context) (harness.BusCounts, error) {
	return r.inspector().Counts(ctx)
}

// waitBus waits until the audit stream holds at least n messages, failing
// early when one of procs exits.
func (r *e2eRun) waitBus(n uint64, procs ...*harness.Proc) {
	r.t.Helper()
	err := harness.WaitFor(r.ctx, fmt.Sprintf("%d audit events on the bus", n), func(ctx context.Context) (bool, string, error) {
		if err := harness.Alive(procs...); err != nil {
			return false, "", err
		}
		c, err := r.busCounts(ctx)
		if err != nil {
			return false, "", err
		}
		return c.AuditTotal >= n, fmt.Sprintf("bus: audit %d, sessions %d", c.AuditTotal, c.Sessions), nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// waitFluentd waits until Fluentd holds at least n distinct audit events.
func (r *e2eRun) waitFluentd(n int64, procs ...*harness.Proc) {
	r.t.Helper()
	err := harness.WaitFor(r.ctx, fmt.Sprintf("%d audit events at Fluentd", n), func(ctx context.Context) (bool, string, error) {
		if err := harness.Alive(procs...); err != nil {
			return false, "", err
		}
		pr, err := r.p.FluentdProgress(ctx)
		return err == nil && pr.Audit >= n, pr.String(), err
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// waitDelivered waits until Fluentd holds every expected event, failing
// early when one of procs exits. It returns how long that took.
func (r *e2eRun) waitDelivered(procs ...*harness.Proc) time.Duration {
	r.t.Helper()
	began := time.Now()
	want := fmt.Sprintf("audit %d, session %d", len(r.want.AuditIDs), r.want.SessionTotal)
	err := harness.WaitFor(r.ctx, "every event at Fluentd ("+want+")", func(ctx context.Context) (bool, string, error) {
		if err := harness.Alive(procs...); err != nil {
			return false, "", err
		}
		pr, err := r.p.FluentdProgress(ctx)
		return err == nil && r.want.Done(pr), pr.String(), err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return time.Since(began)
}

// checkFluentd asserts, by event id, that Fluentd holds every audit event
// under test.log and every session event under its session's tag, with at
// most maxDup duplicates. It returns the duplicates.
func (r *e2eRun) checkFluentd(maxDup int) int {
	r.t.Helper()
	d, err := r.want.CompareFluentd(r.ctx, r.p)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, problem := range d.Lost() {
		r.t.Error(problem)
	}
	dups := d.AuditDuplicates + d.SessionDuplicates
	if dups > maxDup {
		r.t.Errorf("fluentd: %d duplicates (audit %d, session %d), want at most %d", dups, d.AuditDuplicates, d.SessionDuplicates, maxDup)
	}
	return dups
}

// checkStreams asserts that the audit and session streams hold every
// expected event exactly once (by Nats-Msg-Id), and no dead letters.
func (r *e2eRun) checkStreams() {
	r.t.Helper()
	insp := r.inspector()
	audit, err := insp.MsgIDs(r.ctx, insp.AuditStream())
	if err != nil {
		r.t.Fatalf("read the audit stream: %v", err)
	}
	sessions, err := insp.MsgIDs(r.ctx, insp.SessionStream())
	if err != nil {
		r.t.Fatalf("read the session stream: %v", err)
	}
	for _, problem := range r.want.CompareStreams(audit, sessions).Problems() {
		r.t.Error(problem)
	}
	c, err := insp.Counts(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	if c.DeadLetters != 0 {
		r.t.Errorf("dead letters: %d, want 0", c.DeadLetters)
	}
}

// checkRSS logs every process's peak RSS and asserts the pipeline's own
// processes (ingest, fluentd-sink, audit-tail) stayed under limit (0: log
// only); an ingest, which embeds the NATS server, under embeddedRSSLimit. The test doubles hold every event in memory by design: their
// figures are logged only.
func (r *e2eRun) checkRSS(limit int64) {
	r.t.Helper()
	peak := make(map[string]int64)
	var names []string
	for _, proc := range r.procs() {
		if _, ok := peak[proc.Name]; !ok {
			names = append(names, proc.Name)
		}
		peak[proc.Name] = max(peak[proc.Name], proc.PeakRSS())
	}
	var line []string
	for _, n := range names {
		line = append(line, fmt.Sprintf("%s %.1f MB", n, float64(peak[n])/mb))
		bound := limit
		if strings.HasPrefix(n, "ingest") && bound > 0 {
			bound = max(bound, embeddedRSSLimit)
		}
		if bound > 0 && !isSim(n) && peak[n] > bound {
			r.t.Errorf("%s: peak RSS %.1f MB, want under %.0f MB", n, float64(peak[n])/mb, float64(bound)/mb)
		}
	}
	r.t.Logf("peak RSS: %s", strings.Join(line, ", "))
}

func isSim(name string) bool {
	return strings.HasPrefix(name, "teleport-sim") || strings.HasPrefix(name, "fluentd-sim") || strings.HasPrefix(name, "nats-server")
}

// killMoments draws n increasing thresholds between 5% and 95% of total,
// from a seed that is logged (and read from E2E_SEED when set) so a failing
// run can be repeated.
func killMoments(t *testing.T, n, total int) []int {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("E2E_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("E2E_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("kill moments from seed %d (E2E_SEED=%d repeats them)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	lo, hi := total/20, total*19/20
	out := make([]int, n)
	for i := range out {
		out[i] = lo + rng.IntN(max(hi-lo, 1))
	}
	slices.Sort(out)
	return out
}

// TestBackfillDeliversEveryEvent backfills 100,000 audit events (1,000,000
// with SOAK=1) with recorded sessions through ingest and fluentd-sink: every
// audit event reaches test.log and every session event its
// session.<sid>.log, by id, nothing dead-lettered, each id once in the
// streams and at Fluentd.
func TestBackfillDeliversEveryEvent(t *testing.T) {
	r := newE2ERun(t, runSpec{
		events:   sized(100_000, 1_000_000),
		sessions: sized(300, 3000),
		days:     3,
		timeout:  sized(4*time.Minute, 30*time.Minute),
	})
	began := time.Now()
	ing := r.ingest("ingest")
	snk := r.sink("fluentd-sink")
	r.waitDelivered(ing, snk)
	took := time.Since(began)
	total := len(r.want.AuditIDs) + r.want.SessionTotal
	t.Logf("delivered %d events in %s (%.0f events/s)", total, took.Round(100*time.Millisecond), float64(total)/took.Seconds())

	r.checkFluentd(0)
	r.checkStreams()
	r.checkRSS(0) // bounded memory is TestFluentdOutageAndSlowness's to assert
}
