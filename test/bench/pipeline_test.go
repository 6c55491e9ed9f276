package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// BenchmarkPipeline runs the pipeline three times over, each part a real
// process built from this tree, and prints one table:
//
//  1. backfill: teleport-sim holds BENCH_EVENTS audit events (default
//     1,000,000) over the last ten days; ingest (embedded NATS) and one
//     fluentd-sink start together with default settings. Measured: ingest
//     start → the audit stream holds them all; the first → the last
//     delivery to fluentd-sim; ingest start → the last delivery.
//  2. the older exporter's model on the same stream: a new sink consumer
//     with one event per request and one request at a time, for
//     BENCH_SERIAL_EVENTS events or BENCH_SERIAL_MAX, whichever is first.
//  3. live tail: a fresh pipeline where teleport-sim appends BENCH_LIVE_RATE
//     events/s and ingest polls every second (--timeout 1s); see live_test.go
//     for how the delay is measured.
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
		var r report
		r.opts = o
		if err := runBackfillAndSerial(ctx, bin, filepath.Join(dir, "backfill"), o, &r); err != nil {
			b.Fatal(err)
		}
		if o.liveFor > 0 {
			if err := runLive(ctx, bin, filepath.Join(dir, "live"), o, &r); err != nil {
				b.Fatal(err)
			}
		}
		r.print(os.Stdout)
		r.reportMetrics(b)
		if problems := r.problems(); len(problems) > 0 {
			b.Errorf("the run was not clean:\n  %s", strings.Join(problems, "\n  "))
		}
	}
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

// runBackfillAndSerial is phases 1 and 2, on one pipeline.
func runBackfillAndSerial(ctx context.Context, bin, dir string, o options, r *report) (err error) {
	p, err := harness.NewPipeline(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer func() {
		if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
			r.notes = append(r.notes, "backfill pipeline did not stop cleanly: "+strings.Join(bad, ", "))
		}
		if err != nil {
			err = fmt.Errorf("%w\nlogs are in %s", err, p.LogDir)
		}
	}()

	now := time.Now().UTC()
	from := now.AddDate(0, 0, -10).Truncate(24 * time.Hour)
	// --prerender renders every event before teleport-sim reports it is
	// serving, so the test double spends little CPU while it is timed.
	if err := p.StartTeleport(ctx, "--events", fmt.Sprint(o.events), "--sessions", "0", "--huge-events", "0",
		"--from", from.Format(time.RFC3339), "--to", now.Format(time.RFC3339), "--seed", "1", "--prerender"); err != nil {
		return err
	}
	prerender := cpuTime(p.Teleport.PID()) // not part of serving
	if err := p.StartFluentd(ctx, "--latency", o.fluentdLatency.String()); err != nil {
		return err
	}
	tp, err := p.TeleportStats(ctx)
	if err != nil {
		return err
	}
	want := int64(tp.Events)
	r.events = tp.Events

	start := time.Now()
	ingest, err := p.StartIngest(ctx, "ingest", append([]string{"--start-time", from.Format(time.RFC3339)}, o.ingestFlags...)...)
	if err != nil {
		return err
	}
	insp, err := connect(ctx, p.NATSListen, p.NATSSeed(bus.RoleReader), ingest)
	if err != nil {
		return err
	}
	defer insp.Close()
	sink, err := p.StartSink(ctx, "fluentd-sink", o.sinkFlags...)
	if err != nil {
		return err
	}

	var onBus, firstDelivery, lastDelivery time.Time
	err = poll(ctx, 100*time.Millisecond, 30*time.Minute, p.Procs(), func(now time.Time) (bool, string, error) {
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
			lastDelivery = now
			r.requests, r.connections = fs.Requests, fs.Connections
		}
		return done, fmt.Sprintf("audit stream %d/%d, stored by fluentd-sim %d/%d", c.AuditTotal, want, fs.StoredTotal, want), nil
	})
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	r.ingest = onBus.Sub(start)
	r.sink = lastDelivery.Sub(firstDelivery)
	r.overall = lastDelivery.Sub(start)
	// Before the checks below, which make the sims build large answers.
	sim := usage("teleport-sim (test double; CPU after prerendering)", p.Teleport, false)
	sim.cpu -= prerender
	r.rss = append(r.rss,
		usage("ingest (with embedded NATS)", ingest, true),
		usage("fluentd-sink", sink, true),
		sim,
		usage("fluentd-sim (test double)", p.Fluentd, false))

	if err := checkBackfill(ctx, p, insp, r); err != nil {
		return err
	}
	return runSerial(ctx, p, sink, o, r)
}

// checkBackfill compares, by event id, what fluentd-sim stored with what
// teleport-sim holds, and counts duplicates in the stream and at Fluentd.
func checkBackfill(ctx context.Context, p *harness.Pipeline, insp *harness.Inspector, r *report) error {
	teleport, err := p.TeleportIDs(ctx)
	if err != nil {
		return err
	}
	stored, err := p.FluentdIDs(ctx, "test.log")
	if err != nil {
		return err
	}
	for _, id := range teleport {
		if stored[id] == 0 {
			r.missing++
		}
	}
	for _, n := range stored {
		r.fluentdDups += n - 1
	}
	inStream, err := insp.MsgIDs(ctx, insp.AuditStream())
	if err != nil {
		return err
	}
	for _, n := range inStream {
		r.streamDup += n - 1
	}
	return nil
}

// runSerial stops the batching sink, empties fluentd-sim, and drains the
// same stream with a new consumer in the older tool's model: one event per
// request, one request at a time. The rate is taken from the first delivery
// on, so the sink's start-up does not count against it.
func runSerial(ctx context.Context, p *harness.Pipeline, sink *harness.Proc, o options, r *report) error {
	if code, err := sink.Stop(30 * time.Second); err != nil || code != 0 {
		r.notes = append(r.notes, fmt.Sprintf("fluentd-sink exited %d on SIGTERM (%v)", code, err))
	}
	if err := harness.Post(ctx, "POST", p.FluentdControl+"/reset", ""); err != nil {
		return err
	}
	// The bus is closed: the sink role may only use the two durables ingest
	// was configured with, so this second consumer runs as the reader role,
	// which may create consumers of its own (as a SIEM feed would).
	serial, err := p.StartSink(ctx, "fluentd-sink-serial",
		"--sink-nats-nkey", p.NATSSeed(bus.RoleReader),
		"--sink-audit-consumer", "bench-serial", "--sink-session-consumer", "bench-serial-sessions",
		"--sink-batch-size", "1", "--sink-in-flight", "1")
	if err != nil {
		return err
	}
	want := int64(min(o.serialEvents, r.events))
	var first, last time.Time
	var firstN, lastN int64
	err = poll(ctx, 100*time.Millisecond, o.serialMax+2*time.Minute, []*harness.Proc{serial}, func(now time.Time) (bool, string, error) {
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
		return fmt.Errorf("older model: %w", err)
	}
	r.serialEvents = lastN
	if d := last.Sub(first); d > 0 && lastN > firstN {
		r.serialRate = float64(lastN-firstN) / d.Seconds()
	}
	r.rss = append(r.rss, usage("fluentd-sink (older model)", serial, true))
	if code, err := serial.Stop(30 * time.Second); err != nil || code != 0 {
		r.notes = append(r.notes, fmt.Sprintf("fluentd-sink-serial exited %d on SIGTERM (%v)", code, err))
	}
	return nil
}

// usage is a running process's peak RSS and CPU time so far.
func usage(name string, p *harness.Proc, ours bool) procRSS {
	return procRSS{name: name, bytes: p.PeakRSS(), ours: ours, cpu: cpuTime(p.PID())}
}

// connect waits until the embedded NATS server of ingest answers.
func connect(ctx context.Context, listen, nkey string, ingest *harness.Proc) (*harness.Inspector, error) {
	var insp *harness.Inspector
	err := poll(ctx, 100*time.Millisecond, time.Minute, []*harness.Proc{ingest}, func(time.Time) (bool, string, error) {
		var err error
		insp, err = harness.NewInspector(ctx, "", listen, nkey)
		if err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	if err != nil {
		return nil, fmt.Errorf("the embedded NATS server on %s: %w", listen, err)
	}
	return insp, nil
}

// poll calls check every interval until it reports done. It fails when
// check fails, when limit passes or ctx ends (with check's last state), or
// when one of procs exits.
func poll(ctx context.Context, every, limit time.Duration, procs []*harness.Proc,
	check func(now time.Time) (done bool, state string, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		done, state, err := check(time.Now())
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		for _, p := range procs {
			if exited, code := p.Exited(); exited {
				return fmt.Errorf("%s exited (code %d); last state: %s\n%s", p.Name, code, state, p.Tail(20))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w; last state: %s", limit, ctx.Err(), state)
		case <-tick.C:
		}
	}
}
