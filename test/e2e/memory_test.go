package e2e

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMemoryBudget runs a backfill with ingest.memory-budget given as a
// flag: ingest logs the budget and the Go limit at start, serves the budget
// and its memory on /metrics, `ingest status` prints the leader's memory
// against the budget, the resident set stays under the budget, and every
// event arrives once.
func TestMemoryBudget(t *testing.T) {
	r := newE2ERun(t, runSpec{events: 20_000, sessions: 10, days: 1, timeout: 5 * time.Minute})
	const budget = 320 << 20
	ing := r.ingest("ingest", "--ingest-memory-budget", "320MiB")
	snk := r.sink("fluentd-sink")

	line, err := ing.WaitForLine(r.ctx, "memory budget:")
	if err != nil {
		t.Fatalf("%v\n%s", err, ing.Tail(10))
	}
	for _, w := range []string{"memory budget: 320MiB for ingest and the embedded NATS server (ingest.memory-budget); Go memory limit 272MiB", `"budget_bytes":335544320`} {
		if !strings.Contains(line, w) {
			t.Errorf("start line %s lacks %q", line, w)
		}
	}
	addr := servingAddr(r.ctx, t, ing)
	r.waitBus(2000, ing, snk)

	m := gauges(httpGet(r.ctx, t, "http://"+addr+"/metrics"), "teleport_event_bus_ingest_memory_")
	if m["teleport_event_bus_ingest_memory_budget_bytes"] != budget {
		t.Errorf("memory_budget_bytes %v, want %d", m["teleport_event_bus_ingest_memory_budget_bytes"], budget)
	}
	for _, name := range []string{"teleport_event_bus_ingest_memory_bytes", "teleport_event_bus_ingest_memory_rss_bytes"} {
		if v := m[name]; v < 10e6 || v > budget {
			t.Errorf("%s = %v: not between 10 MB and the budget (%v)", name, v, m)
		}
	}

	code, out := r.runOnce("ingest-status", "ingest", append([]string{"status"}, r.p.IngestArgs()...)...)
	if want := regexp.MustCompile(`(?m)^Memory: \d+ MB of 335 MB budget \(embedded NATS server included\)$`); code != 0 || !want.MatchString(out) {
		t.Errorf("status: exit %d, want 0 and a line matching %s:\n%s", code, want, out)
	}

	r.waitDelivered(ing, snk)
	if peak := ing.PeakRSS(); peak > budget {
		t.Errorf("ingest's peak RSS %d is over its budget %d", peak, budget)
	}
	r.checkStreams()
	r.checkFluentd(0)
}

// gauges reads the samples of the metrics whose names start with prefix
// from a Prometheus text exposition.
func gauges(body, prefix string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}
