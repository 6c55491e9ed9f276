package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// BenchmarkPipeline runs the pipeline several times over, each part a real
// process built from this tree, and prints one table:
//
//  1. backfill: teleport-sim holds BENCH_EVENTS audit events (default
//     1,000,000) over the last ten days; ingest (embedded NATS) and one
//     fluentd-sink start together with default settings, so with ingest's
//     default memory budget. Measured: ingest start → the audit stream
//     holds them all; the first → the last delivery to fluentd-sim; ingest
//     start → the last delivery; every process's peak RSS and CPU.
//  2. the same backfill on a fresh pipeline with the budget off
//     (BENCH_OFF_FLAGS, default --ingest-memory-budget off), for the ratio
//     of the two rates (BENCH_BUDGET_OFF=0 skips it).
//  3. the same backfill on a fresh pipeline whose ingest and sink use a
//     separate nats-server process (--nats-url) with the roles' NKeys, as a
//     deployment with its own NATS does; its RSS is shown as a test-side
//     figure (BENCH_EXTERNAL=0 skips it).
//  4. the older exporter's model on a fresh pipeline whose stream holds
//     BENCH_SERIAL_EVENTS events (at most BENCH_EVENTS) before its sink
//     starts: one event per request and one request at a time, for all of
//     them or BENCH_SERIAL_MAX, whichever is first (BENCH_SERIAL_EVENTS=0
//     skips it).
//  5. live tail: a fresh pipeline (default budget) where teleport-sim
//     appends BENCH_LIVE_RATE events/s and ingest polls every second
//     (--timeout 1s); see live_test.go for how the delay is measured
//     (BENCH_LIVE_FOR=0 skips it).
//
// Every backfill, and the older model, is checked by event id: an event
// missing or duplicated fails the benchmark; a missed speed or memory goal
// is printed as MISSED. A phase that fails names its logs, copied where
// they outlive the benchmark's temporary directory, and shows their last
// lines.
//
// Run it with `make bench` (or go test -run '^$' -bench BenchmarkPipeline
// -benchtime 1x -timeout 60m ./test/bench/).
func BenchmarkPipeline(b *testing.B) {
	o, err := optionsFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	bin := b.TempDir()
	if err := harness.Build(ctx, bin); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		dir := workDir(b, o, i)
		r := report{opts: o}
		if err := r.run(ctx, bin, dir); err != nil {
			b.Fatal(err)
		}
		r.print(os.Stdout)
		r.reportMetrics(b)
		if problems := r.problems(); len(problems) > 0 {
			b.Errorf("the run was not clean:\n  %s", strings.Join(problems, "\n  "))
		}
	}
}

// The settings the backfill runs with.
var (
	settingDefault = setting{name: "default budget", key: "", dir: "backfill", ingestName: "ingest (embedded NATS, default budget)", ingestGoal: goalIngestRSS}
	settingOff     = setting{name: "budget off", key: "off-", dir: "backfill-off", ingestName: "ingest (embedded NATS, budget off)"}
	settingExtNATS = setting{name: "external NATS", key: "ext-", dir: "backfill-ext", ingestName: "ingest (--nats-url)", ingestGoal: goalIngestRSSExtNATS, external: true}
)

// run runs every phase the options ask for, each on a fresh pipeline under
// dir.
//
// Order: the budget-off backfill first, the default one right after it.
// Their rates are compared, so they run back to back to share the
// machine's load as far as possible (a shared machine's load changes from
// minute to minute, and the goal leaves the budget 15%). With
// BENCH_PAIRS > 1 the pairs alternate (off, default), (default, off), …,
// so a load that rises or falls through the run weighs on both settings
// alike, and the table compares medians.
// Before every backfill, sync writes the previous run's dirty pages out
// (each backfill writes its stream to disk), so no run pays for another's
// writeback. What else differs between the first and the second run —
// starting the sims, teleport-sim's prerendering — happens before ingest
// starts, when the clock starts.
func (r *report) run(ctx context.Context, bin, dir string) error {
	o := r.opts
	pairs := 1
	if o.budgetOff {
		pairs = o.pairs
	}
	for i := range pairs {
		order := []setting{settingOff, settingDefault}
		if !o.budgetOff {
			order = order[1:]
		} else if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, s := range order {
			s.label, s.flags = s.name, nil
			sub := s.dir
			if pairs > 1 {
				s.label = fmt.Sprintf("%s #%d", s.name, i+1)
				sub = fmt.Sprintf("%s-%d", sub, i+1)
			}
			if s.key == settingOff.key {
				s.flags = o.offFlags
			}
			bf, err := runBackfill(ctx, bin, filepath.Join(dir, sub), o, s, r)
			if err != nil {
				return err
			}
			r.order = append(r.order, bf)
			if s.key == settingOff.key {
				r.offs = append(r.offs, bf)
			} else {
				r.defs = append(r.defs, bf)
			}
		}
	}
	if o.external {
		s := settingExtNATS
		s.label = s.name
		bf, err := runBackfill(ctx, bin, filepath.Join(dir, s.dir), o, s, r)
		if err != nil {
			return err
		}
		r.order = append(r.order, bf)
		r.ext = bf
	}
	if o.serialEvents > 0 {
		syscall.Sync()
		if err := runSerial(ctx, bin, filepath.Join(dir, "serial"), o, r); err != nil {
			return err
		}
	}
	if o.liveFor > 0 {
		syscall.Sync()
		if err := runLive(ctx, bin, filepath.Join(dir, "live"), o, r); err != nil {
			return err
		}
	}
	return nil
}

// workDir is BENCH_DIR (emptied, kept afterwards) or a temporary directory.
func workDir(b *testing.B, o options, i int) string {
	if o.dir == "" {
		return b.TempDir()
	}
	dir, err := filepath.Abs(filepath.Join(o.dir, fmt.Sprint(i)))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	return dir
}

// runBackfill is one backfill on a fresh pipeline under dir, with ingest
// set up as s says.
func runBackfill(ctx context.Context, bin, dir string, o options, s setting, r *report) (bf *backfill, err error) {
	p, err := harness.NewPipeline(ctx, bin, dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
			r.notes = append(r.notes, fmt.Sprintf("backfill (%s) pipeline did not stop cleanly: %s", s.label, strings.Join(bad, ", ")))
		}
		if err != nil {
			err = withLogs(fmt.Errorf("backfill (%s): %w", s.label, err), o.dir != "", []string{p.LogDir}, tails(p.Procs()))
		}
	}()
	bf = &backfill{setting: s}

	now := time.Now().UTC()
	from := now.AddDate(0, 0, -10).Truncate(24 * time.Hour)
	// --prerender renders every event before teleport-sim reports it is
	// serving, so the test double spends little CPU while it is timed.
	if err := p.StartTeleport(ctx, "--events", fmt.Sprint(o.events), "--sessions", "0", "--huge-events", "0",
		"--from", from.Format(time.RFC3339), "--to", now.Format(time.RFC3339), "--seed", "1", "--prerender"); err != nil {
		return nil, err
	}
	prerender := cpuTime(p.Teleport.PID()) // not part of serving
	if err := p.StartFluentd(ctx, "--latency", o.fluentdLatency.String()); err != nil {
		return nil, err
	}
	tp, err := p.TeleportStats(ctx)
	if err != nil {
		return nil, err
	}
	want := int64(tp.Events)
	bf.events = tp.Events
	r.events = tp.Events

	var natsServer *harness.Proc
	ingestArgs := []string{"--start-time", from.Format(time.RFC3339)}
	var busArgs []string // for ingest and the sink
	if s.external {
		var url string
		if natsServer, url, err = p.NATSServer(ctx); err != nil {
			return nil, err
		}
		p.Adopt(natsServer) // stopped after ingest and the sink
		busArgs = []string{"--nats-url", url}
		bf.natsURL = url
	}
	ingestArgs = append(append(append(ingestArgs, busArgs...), o.ingestFlags...), s.flags...)

	syscall.Sync() // see report.run
	bf.loadStart = loadAverage()
	start := time.Now()
	ingest, err := p.StartIngest(ctx, "ingest", ingestArgs...)
	if err != nil {
		return nil, err
	}
	insp, err := connect(ctx, bf.natsURL, p.NATSListen, p.NATSSeed(bus.RoleReader), ingest)
	if err != nil {
		return nil, err
	}
	defer insp.Close()
	sink, err := p.StartSink(ctx, "fluentd-sink", append(busArgs, o.sinkFlags...)...)
	if err != nil {
		return nil, err
	}

	var onBus, firstDelivery, lastDelivery time.Time
	err = poll(ctx, 100*time.Millisecond, 10*time.Minute, p.Procs(), func(now time.Time) (bool, string, error) {
		c, err := insp.Counts(ctx)
		if err != nil {
			return false, "", err
		}
		fs, err := p.FluentdStats(ctx)
		if err != nil {
			return false, "", err
		}
		if onBus.IsZero() && int64(c.AuditTotal) >= want {
			onBus = now
		}
		if firstDelivery.IsZero() && fs.StoredTotal > 0 {
			firstDelivery = now
		}
		done := fs.StoredTotal >= want
		if done {
			// The streams were read before fluentd-sim: when the last
			// events reached the bus and Fluentd between the two reads,
			// they were on the bus by now.
			if onBus.IsZero() {
				onBus = now
			}
			lastDelivery = now
			bf.requests, bf.connections = fs.Requests, fs.Connections
		}
		return done, fmt.Sprintf("audit stream %d/%d, stored by fluentd-sim %d/%d", c.AuditTotal, want, fs.StoredTotal, want), nil
	})
	if err != nil {
		return nil, err
	}
	bf.loadEnd = loadAverage()
	if bf.budget, bf.budgetKnown, err = ingestBudget(ctx, ingest); err != nil {
		return nil, err
	}
	if bf.waits, err = ingestWaits(ctx, ingest); err != nil {
		return nil, err
	}
	bf.ingest = onBus.Sub(start)
	bf.sink = lastDelivery.Sub(firstDelivery)
	bf.overall = lastDelivery.Sub(start)
	// Before the checks below, which make the sims build large answers.
	sim := usage("teleport-sim (CPU after prerendering)", p.Teleport, 0, "(test double)")
	sim.cpu -= prerender
	bf.ingestRSS = usage(s.ingestName, ingest, s.ingestGoal, "(no goal)")
	bf.sinkRSS = usage("fluentd-sink", sink, goalSinkRSS, "")
	bf.rss = []procRSS{bf.ingestRSS, bf.sinkRSS}
	if natsServer != nil {
		bf.natsRSS = usage("nats-server (the external bus)", natsServer, 0, "(test side)")
		bf.rss = append(bf.rss, bf.natsRSS)
	}
	bf.rss = append(bf.rss, sim, usage("fluentd-sim", p.Fluentd, 0, "(test double)"))

	if bf.idChecks, err = checkIDs(ctx, p, insp, true); err != nil {
		return nil, err
	}
	info, err := insp.StreamInfo(ctx, insp.AuditStream())
	if err != nil {
		return nil, err
	}
	bf.storedBytes, bf.storedMsgs = info.State.Bytes, info.State.Msgs
	return bf, nil
}

// checkIDs compares, by event id, what fluentd-sim stored with what
// teleport-sim holds (when all, every event should have been delivered),
// and counts duplicates in the stream and at Fluentd.
func checkIDs(ctx context.Context, p *harness.Pipeline, insp *harness.Inspector, all bool) (idChecks, error) {
	var c idChecks
	stored, err := p.FluentdIDs(ctx, "test.log")
	if err != nil {
		return c, err
	}
	if all {
		teleport, err := p.TeleportIDs(ctx)
		if err != nil {
			return c, err
		}
		for _, id := range teleport {
			if stored[id] == 0 {
				c.missing++
			}
		}
	}
	for _, n := range stored {
		c.fluentdDups += n - 1
	}
	inStream, err := insp.MsgIDs(ctx, insp.AuditStream())
	if err != nil {
		return c, err
	}
	for _, n := range inStream {
		c.streamDup += n - 1
	}
	return c, nil
}

// runSerial is the older exporter's model on a fresh pipeline under dir:
// teleport-sim holds BENCH_SERIAL_EVENTS events (at most BENCH_EVENTS)
// over the backfill's ten days, ingest (default settings) puts them all on
// the bus, and only then a fluentd-sink starts with one event per request
// and one request at a time. It runs until fluentd-sim stored them all or
// BENCH_SERIAL_MAX passed since the first delivery; the rate is taken from
// the first delivery on, so the sink's start-up does not count against it.
//
// The sink connects as a deployed one does: the fluentd-sink role, with
// configure's consumer names. It cannot read a backfill's stream instead:
// that role may use only those two consumers, which the backfill's sink
// has read to the end, and a sink cannot run as the reader role, which
// may not touch the state bucket where every sink records its consumers.
func runSerial(ctx context.Context, bin, dir string, o options, r *report) (err error) {
	p, err := harness.NewPipeline(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer func() {
		if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
			r.notes = append(r.notes, "older-model pipeline did not stop cleanly: "+strings.Join(bad, ", "))
		}
		if err != nil {
			err = withLogs(fmt.Errorf("older model: %w", err), o.dir != "", []string{p.LogDir}, tails(p.Procs()))
		}
	}()

	now := time.Now().UTC()
	from := now.AddDate(0, 0, -10).Truncate(24 * time.Hour)
	if err := p.StartTeleport(ctx, "--events", fmt.Sprint(min(o.serialEvents, o.events)), "--sessions", "0", "--huge-events", "0",
		"--from", from.Format(time.RFC3339), "--to", now.Format(time.RFC3339), "--seed", "1", "--prerender"); err != nil {
		return err
	}
	if err := p.StartFluentd(ctx, "--latency", o.fluentdLatency.String()); err != nil {
		return err
	}
	tp, err := p.TeleportStats(ctx)
	if err != nil {
		return err
	}
	want := int64(tp.Events)
	ingest, err := p.StartIngest(ctx, "ingest", append([]string{"--start-time", from.Format(time.RFC3339)}, o.ingestFlags...)...)
	if err != nil {
		return err
	}
	insp, err := connect(ctx, "", p.NATSListen, p.NATSSeed(bus.RoleReader), ingest)
	if err != nil {
		return err
	}
	defer insp.Close()
	err = poll(ctx, 100*time.Millisecond, 10*time.Minute, p.Procs(), func(time.Time) (bool, string, error) {
		c, err := insp.Counts(ctx)
		if err != nil {
			return false, "", err
		}
		return int64(c.AuditTotal) >= want, fmt.Sprintf("audit stream %d/%d (before the sink starts)", c.AuditTotal, want), nil
	})
	if err != nil {
		return err
	}

	serial, err := p.StartSink(ctx, "fluentd-sink-serial", "--sink-batch-size", "1", "--sink-in-flight", "1")
	if err != nil {
		return err
	}
	var first, last time.Time
	var firstN, lastN int64
	err = poll(ctx, 100*time.Millisecond, 2*time.Minute, p.Procs(), func(now time.Time) (bool, string, error) {
		fs, err := p.FluentdStats(ctx)
		if err != nil {
			return false, "", err
		}
		if first.IsZero() && fs.StoredTotal > 0 {
			first, firstN = now, fs.StoredTotal
		}
		last, lastN = now, fs.StoredTotal
		done := fs.StoredTotal >= want || (!first.IsZero() && now.Sub(first) >= o.serialMax)
		return done, fmt.Sprintf("stored by fluentd-sim %d/%d", fs.StoredTotal, want), nil
	})
	if err != nil {
		return err
	}
	r.serial.events, r.serial.all = lastN, lastN >= want
	if d := last.Sub(first); d > 0 && lastN > firstN {
		r.serial.rate = float64(lastN-firstN) / d.Seconds()
	}
	r.rss = append(r.rss, usage("fluentd-sink (older model)", serial, goalSinkRSS, ""))
	if code, err := serial.Stop(30 * time.Second); err != nil || code != 0 {
		r.notes = append(r.notes, fmt.Sprintf("fluentd-sink-serial exited %d on SIGTERM (%v)", code, err))
	}
	// After the stop: what it stored then is all it delivered.
	r.serial.idChecks, err = checkIDs(ctx, p, insp, r.serial.all)
	return err
}

// usage is a running process's peak RSS and CPU time so far, with its RSS
// goal in bytes, or 0 and what to print instead of a goal.
func usage(name string, p *harness.Proc, goal int64, noGoal string) procRSS {
	return procRSS{name: name, bytes: p.PeakRSS(), cpu: cpuTime(p.PID()), goal: goal, noGoal: noGoal}
}

// connect waits until the NATS server at url (an external one), or else
// the embedded server of ingest at listen, answers.
func connect(ctx context.Context, url, listen, nkey string, ingest *harness.Proc) (*harness.Inspector, error) {
	var insp *harness.Inspector
	err := poll(ctx, 100*time.Millisecond, 2*time.Minute, []*harness.Proc{ingest}, func(time.Time) (bool, string, error) {
		var err error
		insp, err = harness.NewInspector(ctx, url, listen, nkey)
		if err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	if err != nil {
		if url != "" {
			return nil, fmt.Errorf("the NATS server at %s: %w", url, err)
		}
		return nil, fmt.Errorf("the embedded NATS server on %s: %w", listen, err)
	}
	return insp, nil
}

// poll calls check every interval until it reports done. It fails when
// check fails, when ctx ends, when one of procs exits, or when the state
// check reports has not changed for stall: on a loaded machine a phase may
// be slow, but a phase whose counts do not move is stuck.
func poll(ctx context.Context, every, stall time.Duration, procs []*harness.Proc,
	check func(now time.Time) (done bool, state string, err error)) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var last string
	var since time.Time // when the state became last
	for {
		now := time.Now()
		done, state, err := check(now)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if since.IsZero() || state != last {
			last, since = state, now
		}
		for _, p := range procs {
			if exited, code := p.Exited(); exited {
				return fmt.Errorf("%s exited (code %d); last state: %s\n%s", p.Name, code, state, p.Tail(20))
			}
		}
		if now.Sub(since) >= stall {
			return fmt.Errorf("gave up: nothing moved for %s; state: %s", stall, state)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up: %w; last state: %s", ctx.Err(), state)
		case <-tick.C:
		}
	}
}
