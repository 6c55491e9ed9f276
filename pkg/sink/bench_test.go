package sink

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

// BenchmarkSink measures one sink draining a pre-filled audit stream into
// fluentdsim over mTLS: with the default batching, and in the older tool's
// model (batch-size 1, one request at a time). BENCH_EVENTS sets the stream
// size (default 100,000; the figure uses 1,000,000); the
// one-at-a-time model sends BENCH_SINGLE_EVENTS of them (default 20,000),
// enough for a steady rate. Run it with `make bench-sink`. The peak RSS is
// the whole test process's (sink, embedded nats-server and fluentdsim),
// reset before each run.
func BenchmarkSink(b *testing.B) {
	n := envInt("BENCH_EVENTS", 100_000)
	single := min(n, envInt("BENCH_SINGLE_EVENTS", 20_000))
	e := newEnv(b, fluentdsim.Options{})
	start := time.Now()
	prefill(b, e, n)
	b.Logf("pre-filled %d audit events in %s", n, time.Since(start).Round(time.Millisecond))

	base := *e.cfg
	base.Sink = config.Default().Sink
	base.Fluentd.SessionURL = "" // the audit stream only
	var rates [2]float64
	b.Run("batched", func(b *testing.B) {
		rates[0] = drain(b, e, base, n, "batched")
	})
	b.Run("one-at-a-time", func(b *testing.B) {
		cfg := base
		cfg.Sink.BatchSize, cfg.Sink.InFlight = 1, 1
		rates[1] = drain(b, e, cfg, single, "single")
	})
	if rates[0] > 0 && rates[1] > 0 {
		b.Logf("batched %.0f events/s, one-at-a-time %.0f events/s: %.1fx", rates[0], rates[1], rates[0]/rates[1])
	}
}

// drain runs a sink on a fresh consumer until fluentdsim stored want
// events, b.N times, and reports the rate and peak RSS.
func drain(b *testing.B, e *env, cfg config.Config, want int, name string) float64 {
	var rate float64
	for i := range b.N {
		cfg.Sink.AuditConsumer = fmt.Sprintf("bench-%s-%d", name, i)
		e.sim.Reset()
		resetPeakRSS()
		b.ResetTimer()
		start := time.Now()
		r := e.start(&cfg)
		e.waitStored(want, 30*time.Minute)
		elapsed := time.Since(start)
		b.StopTimer()
		if err := r.stop(b); err != nil {
			b.Fatalf("sink: %v", err)
		}
		st := e.sim.Stats()
		rate = float64(want) / elapsed.Seconds()
		b.ReportMetric(rate, "events/s")
		b.ReportMetric(float64(st.Requests), "requests")
		if rss := peakRSS(); rss > 0 {
			b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MB")
		}
		b.Logf("%s: %d events in %s = %.0f events/s, %d requests, %d connections, peak RSS %d MB (process)",
			name, want, elapsed.Round(time.Millisecond), rate, st.Requests, st.Connections, peakRSS()>>20)
	}
	return rate
}

// prefill publishes n audit events, a bounded number of PubAcks outstanding.
func prefill(b *testing.B, e *env, n int) {
	const chunk = 2000
	for from := 0; from < n; from += chunk {
		evs := make([]bus.Event, 0, chunk)
		for i := from; i < min(from+chunk, n); i++ {
			evs = append(evs, auditEvent(i))
		}
		e.publish(evs...)
	}
}

func envInt(name string, def int) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil || v <= 0 {
		return def
	}
	return v
}

// resetPeakRSS resets the kernel's high-water mark of this process's RSS
// (Linux; a no-op elsewhere).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is VmHWM in bytes, 0 when unknown.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
