package ingest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// BenchmarkSearch measures the search path against a file-log Teleport
// double (every page parses, sorts and walks all the events of the days it
// touches, as Teleport's file audit log does), in one run so the ratios
// compare figures taken under the same load:
//
//   - sim-serial: the double's own serial paging rate at the largest page
//     (10,000, cut at 1 MiB): SearchUnstructuredEvents through the real
//     client, page after page, over today's BENCH_SEARCH_EVENTS events
//     (default 100,000); events / wall time of the whole pass.
//
//   - default: ingest with default settings (a child process, as in
//     production, running the embedded nats-server and publishing to it)
//     over the same events with exit-on-last-event; events / wall time
//     from the child's start to its exit. The double is prerendered, so
//     no run pays for rendering events (a real Teleport has them on disk).
//
//   - page20: the same with ingest.page-size 20. Paging all of it takes
//     hours (each page of 20 costs as much as a page of 2,700), so it runs
//     for BENCH_SEARCH_SLICE (default 60s) and is then killed: messages in
//     the stream / the slice. Every page costs the same, so the rate of a
//     slice is the rate of the whole.
//
//   - 3days-sim-serial, 3days-sim-parallel: whether reading days side by
//     side would pay. Three past days of BENCH_SEARCH_EVENTS events each;
//     the double's paging rate at the largest page, one day after the
//     other through one client, and with three clients paging one day each
//     at once, each for one slice: events received / the slice. Each runs
//     twice, in the order serial, parallel, parallel, serial, and the
//     figure is the mean of the two. (Ingest reads days one after the
//     other: with windows read side by side it measured 0.88x and 1.12x
//     the serial rate here.)
//
//     make bench-search
//     BENCH_SEARCH_EVENTS=20000 BENCH_SEARCH_SLICE=30s go test -run '^$' -bench BenchmarkSearch -benchtime 1x -timeout 60m ./pkg/ingest/
func BenchmarkSearch(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("BENCH_SEARCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	slice := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("BENCH_SEARCH_SLICE")); err == nil && d > 0 {
		slice = d
	}
	for i := 0; i < b.N; i++ {
		now := time.Now().UTC()
		today := utcDate(now)
		if now.Sub(today) < time.Minute {
			b.Skip("too close to midnight UTC for one day of events")
		}
		oneDay := startBenchSim(b, teleportsim.Options{Seed: 44, Events: n, From: today, To: now, Older: true, Prerender: true})
		simRate := simSerialRate(b, oneDay, today)
		defRate := ingestRate(b, oneDay, today, 0, 0, 0)
		p20Rate := ingestRate(b, oneDay, today, 20, 0, slice)
		_ = oneDay.Close()

		// Whether days side by side would pay: the double paging three
		// past days one after the other, and three clients paging one day
		// each at once. Serial, parallel, parallel, serial: a load that
		// drifts during the run weighs on both alike.
		first := today.AddDate(0, 0, -3)
		threeDays := startBenchSim(b, teleportsim.Options{Seed: 45, Events: 3 * n, From: first, To: today, Older: true, Prerender: true})
		days := []time.Time{first, first.AddDate(0, 0, 1), first.AddDate(0, 0, 2)}
		serial := simDaysRate(b, threeDays, days, false, slice)
		parallel := simDaysRate(b, threeDays, days, true, slice)
		parallel = (parallel + simDaysRate(b, threeDays, days, true, slice)) / 2
		serial = (serial + simDaysRate(b, threeDays, days, false, slice)) / 2
		_ = threeDays.Close()

		b.ReportMetric(simRate, "sim-serial-events/s")
		b.ReportMetric(defRate, "default-events/s")
		b.ReportMetric(p20Rate, "page20-events/s")
		b.ReportMetric(defRate/simRate, "default/sim-serial")
		b.ReportMetric(defRate/p20Rate, "default/page20")
		b.ReportMetric(serial, "3days-sim-serial-events/s")
		b.ReportMetric(parallel, "3days-sim-parallel-events/s")
		b.ReportMetric(parallel/serial, "3days-sim-parallel/serial")
	}
}

// startBenchSim starts a file-log double with opts.
func startBenchSim(b *testing.B, opts teleportsim.Options) *teleportsim.Server {
	b.Helper()
	sim, err := teleportsim.Start(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	if got := sim.Stats().Search; got != "file-log" {
		b.Fatalf("the double answers searches %q; want file-log", got)
	}
	return sim
}

// simSerialRate pages through [from, now] at the largest page through the
// real client and returns events/s.
func simSerialRate(b *testing.B, sim *teleportsim.Server, from time.Time) float64 {
	b.Helper()
	dir := b.TempDir()
	id, err := sim.WriteIdentity(dir, "bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	src, err := teleport.Connect(ctx, config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	to := time.Now().UTC()
	start := time.Now()
	events, key := 0, ""
	for {
		page, next, err := src.SearchUnstructuredEvents(ctx, from, to, teleport.Namespace, nil, config.MaxPageSize, types.EventOrderAscending, key)
		if err != nil {
			b.Fatal(err)
		}
		events += len(page)
		if next == "" {
			break
		}
		key = next
	}
	elapsed := time.Since(start)
	if want := sim.Stats().Events; events != want {
		b.Fatalf("paged %d events; the double holds %d", events, want)
	}
	return float64(events) / elapsed.Seconds()
}

// ingestRate runs ingest in a child process from start against sim,
// with its embedded nats-server, and returns events/s: with
// slice 0 until it exits (exit-on-last-event, every event checked in the
// stream), else for slice and then killed (messages in the stream).
// pageSize and concurrency 0 keep the defaults.
func ingestRate(b *testing.B, sim *teleportsim.Server, start time.Time, pageSize, concurrency int, slice time.Duration) float64 {
	b.Helper()
	dir := b.TempDir()
	id, err := sim.WriteIdentity(dir, "ingest", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	def := config.Default()
	cfg := &def
	cfg.Teleport = config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id}
	cfg.Storage = filepath.Join(dir, "storage")
	cfg.StartTime = start
	cfg.Timeout = time.Second
	cfg.ExitOnLastEvent = true
	if pageSize > 0 {
		cfg.Ingest.PageSize = pageSize
	}
	if concurrency > 0 {
		cfg.Concurrency = concurrency
	}
	cfg.NATS.Listen = "127.0.0.1:0" // the embedded server, in the child
	began := time.Now()
	cmd, done := startChild(b, cfg)
	if slice == 0 {
		if err := <-done; err != nil {
			b.Fatalf("ingest: %v", err)
		}
	} else {
		select {
		case err := <-done:
			b.Fatalf("ingest ended within the %s slice (%v): make BENCH_SEARCH_EVENTS larger or the slice shorter", slice, err)
		case <-time.After(slice):
		}
		_ = cmd.Process.Kill()
		<-done
	}
	elapsed := time.Since(began)
	// The child has exited: serve its storage to count what it stored.
	emb, err := bus.StartEmbedded(context.Background(), bus.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: cfg.Storage, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Shutdown()
	cfg.NATS.URL = emb.ClientURL()
	bb, err := bus.Open(context.Background(), cfg.NATS, "", "bench", zerolog.Nop(), false)
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	msgs := count(bb, bb.Cfg.AuditStream)
	if want := uint64(sim.Stats().Events); slice == 0 && msgs != want {
		b.Fatalf("the stream holds %d messages; the double holds %d events", msgs, want)
	}
	return float64(msgs) / elapsed.Seconds()
}

// simDaysRate pages through the given days at the largest page, one after
// the other or all at once, for slice, and returns events/s.
func simDaysRate(b *testing.B, sim *teleportsim.Server, days []time.Time, parallel bool, slice time.Duration) float64 {
	b.Helper()
	dir := b.TempDir()
	id, err := sim.WriteIdentity(dir, "bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	src, err := teleport.Connect(context.Background(), config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), slice)
	defer cancel()
	var events atomic.Int64
	pageDay := func(day time.Time) error {
		key := ""
		for {
			page, next, err := src.SearchUnstructuredEvents(ctx, day, day.Add(24*time.Hour-time.Nanosecond), teleport.Namespace, nil, config.MaxPageSize, types.EventOrderAscending, key)
			if err != nil {
				return err
			}
			events.Add(int64(len(page)))
			if next == "" {
				return nil
			}
			key = next
		}
	}
	var g errgroup.Group
	if parallel {
		for _, d := range days {
			g.Go(func() error { return pageDay(d) })
		}
	} else {
		g.Go(func() error {
			for _, d := range days {
				if err := pageDay(d); err != nil {
					return err
				}
			}
			return nil
		})
	}
	began := time.Now()
	err = g.Wait()
	elapsed := time.Since(began)
	if ctx.Err() == nil {
		if err != nil {
			b.Fatal(err)
		}
		b.Fatalf("the three days were paged within the %s slice: make BENCH_SEARCH_EVENTS larger or the slice shorter", slice)
	}
	return float64(events.Load()) / elapsed.Seconds()
}
