package sink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// BenchmarkSink measures the fluentd-sink binary, as a separate process,
// draining a pre-filled audit stream (embedded nats-server) into fluentdsim
// over mTLS (both in the benchmark's process): with the default batching,
// the same over in_forward (TLS with client certificates, shared-key
// handshake, one PackedForward message per batch, each acknowledged), and in
// the older tool's model (batch-size 1, one request at a time).
// BENCH_EVENTS sets the stream size (default 100,000; the figure
// uses 1,000,000); the one-at-a-time model sends BENCH_SINGLE_EVENTS of them
// (default 20,000), enough for a steady rate. The peak RSS is the sink
// process's alone. The outage row takes Fluentd down for BENCH_OUTAGE
// (default 30s; 0 skips it) once a tenth of the stream is stored, and
// reports how long after Fluentd's return the first and the last event
// arrived. Run it
// with `make bench-sink`.
func BenchmarkSink(b *testing.B) {
	n := envInt("BENCH_EVENTS", 100_000)
	single := min(n, envInt("BENCH_SINGLE_EVENTS", 20_000))
	bin := b.TempDir()
	if err := harness.Build(context.Background(), bin, "fluentd-sink"); err != nil {
		b.Fatal(err)
	}
	e := newEnv(b, fluentdsim.Options{ForwardAddr: "127.0.0.1:0", SharedKey: benchSharedKey})
	shortDuplicateWindow(b, e)
	keyFile := filepath.Join(bin, "shared.key")
	if err := os.WriteFile(keyFile, []byte(benchSharedKey+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	forward := []string{
		"--fluentd-url", e.sim.ForwardURL() + "/test.log", "--fluentd-session-url", e.sim.ForwardURL() + "/session",
		"--fluentd-shared-key-file", keyFile, "--fluentd-self-hostname", "bench-sink",
	}
	start := time.Now()
	prefill(b, e, n)
	b.Logf("pre-filled %d audit events in %s", n, time.Since(start).Round(time.Millisecond))

	var rates [2]float64
	b.Run("batched", func(b *testing.B) {
		rates[0] = drain(b, e, filepath.Join(bin, "fluentd-sink"), n, "batched")
	})
	b.Run("forward", func(b *testing.B) {
		rate := drain(b, e, filepath.Join(bin, "fluentd-sink"), n, "forward", forward...)
		if rates[0] > 0 && rate > 0 {
			b.Logf("in_forward %.0f events/s, in_http %.0f events/s: forward/http %.2f", rate, rates[0], rate/rates[0])
		}
	})
	if outage := envDuration(b, "BENCH_OUTAGE", 30*time.Second); outage > 0 {
		b.Run("outage", func(b *testing.B) {
			outageRecovery(b, e, filepath.Join(bin, "fluentd-sink"), n, outage)
		})
	}
	b.Run("one-at-a-time", func(b *testing.B) {
		rates[1] = drain(b, e, filepath.Join(bin, "fluentd-sink"), single, "single", "--sink-batch-size", "1", "--sink-in-flight", "1")
		// Logged here rather than by the parent benchmark, whose log go test
		// does not print.
		if rates[0] > 0 && rates[1] > 0 {
			b.Logf("batched %.0f events/s, one-at-a-time %.0f events/s: %.1fx", rates[0], rates[1], rates[0]/rates[1])
		}
	})
}

// benchSharedKey is in_forward's shared key in the forward row.
const benchSharedKey = "bench-shared-key"

// drain starts the sink binary on a fresh consumer, b.N times, waits until
// fluentdsim stored want events, stops it with SIGTERM and reports the rate
// and the sink's peak RSS.
func drain(b *testing.B, e *env, bin string, want int, name string, extra ...string) float64 {
	var rate float64
	for i := range b.N {
		consumer := fmt.Sprintf("bench-%s-%d", name, i)
		urls := []string{"--fluentd-url", e.cfg.Fluentd.URL, "--fluentd-session-url", e.cfg.Fluentd.SessionURL}
		if slices.Contains(extra, "--fluentd-url") { // the forward row's own
			urls = nil
		}
		args := append(append([]string{"--nats-url", e.cfg.NATS.URL}, urls...),
			"--fluentd-ca", e.cfg.Fluentd.CA, "--fluentd-cert", e.cfg.Fluentd.Cert, "--fluentd-key", e.cfg.Fluentd.Key,
			"--sink-audit-consumer", consumer, "--sink-session-consumer", consumer+"-sessions")
		args = append(args, extra...)
		e.sim.Reset()
		b.ResetTimer()
		start := time.Now()
		p, err := harness.Start(context.Background(), harness.Spec{Name: consumer, Bin: bin, Args: args, LogDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		e.waitStored(want, 30*time.Minute)
		elapsed := time.Since(start)
		b.StopTimer()
		code, err := p.Stop(30 * time.Second)
		if err != nil || code != 0 {
			b.Fatalf("sink exit %d, %v\n%s", code, err, p.Tail(20))
		}
		st := e.sim.Stats()
		rate = float64(want) / elapsed.Seconds()
		rss := p.PeakRSS()
		b.ReportMetric(rate, "events/s")
		b.ReportMetric(float64(rss)/(1<<20), "sink-peak-RSS-MiB")
		b.Logf("%s: %d events in %s = %.0f events/s, %d requests, %d connections, sink peak RSS %d MiB",
			name, want, elapsed.Round(time.Millisecond), rate, st.Requests, st.Connections, rss>>20)
	}
	return rate
}

// outageRecovery starts the sink binary on a fresh consumer, takes fluentdsim
// down for outage once a tenth of want is stored, brings it back, and
// reports the time from its return to the first event stored after it (how
// soon the backlog flows again) and to the last of want.
func outageRecovery(b *testing.B, e *env, bin string, want int, outage time.Duration) {
	for i := range b.N {
		consumer := fmt.Sprintf("bench-outage-%d", i)
		args := []string{"--nats-url", e.cfg.NATS.URL, "--fluentd-url", e.cfg.Fluentd.URL, "--fluentd-session-url", e.cfg.Fluentd.SessionURL,
			"--fluentd-ca", e.cfg.Fluentd.CA, "--fluentd-cert", e.cfg.Fluentd.Cert, "--fluentd-key", e.cfg.Fluentd.Key,
			"--sink-audit-consumer", consumer, "--sink-session-consumer", consumer + "-sessions"}
		e.sim.Reset()
		p, err := harness.Start(context.Background(), harness.Spec{Name: consumer, Bin: bin, Args: args, LogDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		e.waitStored(want/10, 30*time.Minute)
		e.sim.Down(0)
		before := e.sim.Stats().StoredTotal
		downFor := time.NewTimer(outage)
		select {
		case <-downFor.C:
		case <-p.Done():
			b.Fatalf("sink exited during the outage\n%s", p.Tail(20))
		}
		if err := e.sim.Up(); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		up := time.Now()
		e.waitStored(int(before)+1, 30*time.Minute)
		first := time.Since(up)
		e.waitStored(want, 30*time.Minute)
		recovery := time.Since(up)
		b.StopTimer()
		code, err := p.Stop(30 * time.Second)
		if err != nil || code != 0 {
			b.Fatalf("sink exit %d, %v\n%s", code, err, p.Tail(20))
		}
		st := e.sim.Stats()
		b.ReportMetric(first.Seconds(), "s-from-return-to-first-event")
		b.ReportMetric(recovery.Seconds(), "s-from-return-to-last-event")
		b.Logf("outage: Fluentd down %s with %d of %d events stored; after it returned the first event arrived in %s, the last of the other %d in %s (%d duplicates)",
			outage, before, want, first.Round(time.Millisecond), want-int(before), recovery.Round(time.Millisecond), st.DuplicatesTotal)
	}
}

// shortDuplicateWindow gives the streams a 1 s duplicate window. The
// pre-fill publishes in seconds a backlog that production builds up over
// hours: with the default two-minute window the embedded server would hold a
// million message ids on this process's heap for the whole run, and every
// garbage collection here (shared with fluentdsim, while in production
// nats-server is a process of its own) would mark them, charging the sink's
// measurement for the pre-fill. With 1 s only the last second's ids are kept.
func shortDuplicateWindow(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := e.bus.Cfg
	cfg.DuplicateWindow = time.Second
	for _, sc := range bus.StreamConfigs(cfg) {
		if _, err := e.bus.JS.UpdateStream(ctx, sc); err != nil {
			b.Fatalf("update stream %s: %v", sc.Name, err)
		}
	}
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

// envDuration reads a duration; "0" turns a phase off.
func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

func envInt(name string, def int) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil || v <= 0 {
		return def
	}
	return v
}
