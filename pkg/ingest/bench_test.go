package ingest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// BenchmarkBackfill exports BENCH_EVENTS audit events (default 100,000)
// from the Teleport double (in this process) to JetStream with ingest in a
// child process, as it runs in production, and reports events/s and the
// child's peak RSS. "embedded" runs the NATS server inside ingest (single-
// node mode); "external" runs it in this process, so the difference of the
// two RSS figures is the embedded server's share. BENCH_DUPLICATE_WINDOW
// (a duration) sets the streams' duplicate window, whose message ids the
// server keeps in memory.
//
//	BENCH_EVENTS=1000000 go test -run '^$' -bench BenchmarkBackfill -benchtime 1x -timeout 30m ./pkg/ingest/
func BenchmarkBackfill(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	now := time.Now().UTC()
	sim, err := teleportsim.Start(context.Background(), teleportsim.Options{
		Seed: 42, Events: n, From: now.Add(-10 * 24 * time.Hour), To: now, ChunksPerDate: 8,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	for _, mode := range []string{"embedded", "external"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				id, err := sim.WriteIdentity(dir, "ingest", time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				cfg := &config.Config{
					Teleport:        config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id},
					NATS:            config.NATSConfig{Listen: "127.0.0.1:0"},
					Ingest:          config.IngestConfig{MaxInFlight: 1024, SessionConcurrency: 4},
					Storage:         filepath.Join(dir, "storage"),
					StartTime:       now.Add(-11 * 24 * time.Hour),
					Timeout:         time.Second,
					ExitOnLastEvent: true,
					Concurrency:     5,
				}
				if d, err := time.ParseDuration(os.Getenv("BENCH_DUPLICATE_WINDOW")); err == nil {
					cfg.NATS.DuplicateWindow = d // the embedded server's dedup memory grows with it
				}
				if mode == "external" {
					emb, err := bus.StartEmbedded(context.Background(), bus.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: cfg.Storage, Log: zerolog.Nop()})
					if err != nil {
						b.Fatal(err)
					}
					defer emb.Shutdown()
					cfg.NATS.URL = emb.ClientURL()
				}
				report := filepath.Join(dir, "rss")
				b.StartTimer()
				start := time.Now()
				_, done := startChild(b, cfg, reportEnv+"="+report)
				if err := <-done; err != nil {
					b.Fatalf("ingest: %v", err)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				raw, err := os.ReadFile(report)
				if err != nil {
					b.Fatal(err)
				}
				kb, err := strconv.ParseUint(string(raw), 10, 64)
				if err != nil {
					b.Fatalf("peak RSS report %q: %v", raw, err)
				}
				b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(kb)/1024, "ingest-peak-rss-MiB")
			}
		})
	}
}

// peakRSS is the process's peak resident set in KiB (VmHWM), 0 if unknown.
func peakRSS() uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0 // unknown, as documented
			}
			return kb
		}
	}
	return 0
}

// BenchmarkLiveTail measures the delay from an event's append in the
// Teleport double to its arrival on the bus while ingest tails the live
// log with a 1 s poll interval (BENCH_LIVE_SECONDS, default 10 s, at 200
// events/s). session.start and session.end are left out: the double dates
// them seconds before their append.
func BenchmarkLiveTail(b *testing.B) {
	secs := 10
	if v, err := strconv.Atoi(os.Getenv("BENCH_LIVE_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	for i := 0; i < b.N; i++ {
		now := time.Now().UTC()
		sim, err := teleportsim.Start(context.Background(), teleportsim.Options{Seed: 43, Events: 10, From: now.Add(-time.Hour), To: now, LiveRate: 200})
		if err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		id, err := sim.WriteIdentity(dir, "ingest", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		emb, err := bus.StartEmbedded(context.Background(), bus.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "storage"), Log: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		cfg := &config.Config{
			Teleport:  config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: id},
			NATS:      config.NATSConfig{URL: emb.ClientURL()},
			Storage:   filepath.Join(dir, "storage"),
			StartTime: now.Add(-2 * time.Hour),
			Timeout:   time.Second,
		}
		bb, err := bus.Open(context.Background(), cfg.NATS, "", "bench", zerolog.Nop(), false)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, cfg, zerolog.Nop()) }()
		var delays []time.Duration
		var mu sync.Mutex
		sub, err := bb.Conn.Subscribe("audit.>", func(m *nats.Msg) {
			typ := m.Header.Get(bus.HeaderEventType)
			if typ == "session.start" || typ == "session.end" {
				return
			}
			at, err := time.Parse(time.RFC3339Nano, m.Header.Get(bus.HeaderEventTime))
			if err != nil || at.Before(now) {
				return
			}
			mu.Lock()
			delays = append(delays, time.Since(at))
			mu.Unlock()
		})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Duration(secs) * time.Second) // the measuring window
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		_ = sub.Unsubscribe()
		bb.Close()
		emb.Shutdown()
		_ = sim.Close()
		mu.Lock()
		slices.Sort(delays)
		if len(delays) > 0 {
			b.ReportMetric(float64(len(delays)), "events")
			b.ReportMetric(delays[len(delays)/2].Seconds(), "p50-s")
			b.ReportMetric(delays[len(delays)*99/100].Seconds(), "p99-s")
		}
		mu.Unlock()
	}
}
