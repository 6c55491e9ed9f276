package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/memlimit"
)

func TestChooseBudget(t *testing.T) {
	cgroup := func(n int64) func() (memlimit.Limit, bool, error) {
		return func() (memlimit.Limit, bool, error) {
			return memlimit.Limit{Bytes: n, File: "/sys/fs/cgroup/memory.max"}, true, nil
		}
	}
	none := func() (memlimit.Limit, bool, error) { return memlimit.Limit{}, false, nil }
	broken := func() (memlimit.Limit, bool, error) {
		return memlimit.Limit{}, false, errors.New("read /proc/self/cgroup: permission denied")
	}
	size := func(n int64) config.MemoryBudget { return config.MemoryBudget{Mode: config.BudgetSize, Bytes: n} }
	auto := config.MemoryBudget{}
	tests := []struct {
		name       string
		setting    config.MemoryBudget
		detect     func() (memlimit.Limit, bool, error)
		want       int64
		wantSource string
	}{
		{"a setting wins over the cgroup", size(384 << 20), cgroup(2 << 30), 384 << 20, "ingest.memory-budget"},
		{"auto follows the cgroup limit", auto, cgroup(512 << 20), 384 << 20, "3/4 of the cgroup memory limit 512MiB in /sys/fs/cgroup/memory.max"},
		{"auto without a cgroup limit", auto, none, config.DefaultMemoryBudget, "default: no cgroup memory limit"},
		{"auto with an unreadable cgroup", auto, broken, config.DefaultMemoryBudget, "default: the cgroup memory limit could not be read: read /proc/self/cgroup: permission denied"},
		{"off", config.MemoryBudget{Mode: config.BudgetOff}, cgroup(512 << 20), 0, "ingest.memory-budget off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mb, err := chooseBudget(tt.setting, tt.detect)
			if err != nil {
				t.Fatal(err)
			}
			if mb.bytes != tt.want || mb.source != tt.wantSource {
				t.Errorf("budget %d from %q, want %d from %q", mb.bytes, mb.source, tt.want, tt.wantSource)
			}
			switch {
			case mb.bytes == 0 && mb.goLimit != 0:
				t.Errorf("off sets a Go limit %d", mb.goLimit)
			case mb.bytes != 0 && (mb.goLimit <= mb.bytes/2 || mb.goLimit >= mb.bytes):
				t.Errorf("Go limit %d for a budget of %d: leaves no headroom, or too much", mb.goLimit, mb.bytes)
			}
		})
	}

	min := config.FormatSize(config.MinMemoryBudget)
	_, err := chooseBudget(auto, cgroup(config.MinMemoryBudget))
	want := `key "ingest.memory-budget": auto is ` + config.FormatSize(config.MinMemoryBudget/4*3) +
		`, 3/4 of the cgroup memory limit ` + min + ` in /sys/fs/cgroup/memory.max, below the smallest budget ingest runs in, ` + min +
		`: raise the memory limit to at least ` + config.FormatSize(config.MinAutoLimit)
	if err == nil || err.Error() != want {
		t.Errorf("cgroup limit below the minimum: %v\nwant %s", err, want)
	}
	_, err = chooseBudget(size(config.MinMemoryBudget-1), none)
	if err == nil || !strings.Contains(err.Error(), `key "ingest.memory-budget"`) || !strings.Contains(err.Error(), "smallest budget ingest runs in, "+min) {
		t.Errorf("size below the minimum: %v", err)
	}
	if _, err := chooseBudget(size(config.MinMemoryBudget), none); err != nil {
		t.Errorf("the minimum itself: %v", err)
	}
}

func TestApplyBudget(t *testing.T) {
	oldLimit, oldGC := debug.SetMemoryLimit(-1), debug.SetGCPercent(-1)
	debug.SetGCPercent(oldGC)
	t.Cleanup(func() { debug.SetMemoryLimit(oldLimit); debug.SetGCPercent(oldGC) })

	var logs bytes.Buffer
	log := zerolog.New(&logs)
	mb, err := chooseBudget(config.MemoryBudget{}, func() (memlimit.Limit, bool, error) {
		return memlimit.Limit{Bytes: 1 << 30, File: "/sys/fs/cgroup/memory.max"}, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	applyBudget(mb, true, log)
	if got := debug.SetMemoryLimit(-1); got != mb.goLimit {
		t.Errorf("Go memory limit %d, want %d", got, mb.goLimit)
	}
	line := logs.String()
	for _, w := range []string{"memory budget: 768MiB for ingest and the embedded NATS server", "3/4 of the cgroup memory limit 1GiB in /sys/fs/cgroup/memory.max", "Go memory limit", `"budget_bytes":805306368`} {
		if !strings.Contains(line, w) {
			t.Errorf("start line %s lacks %q", line, w)
		}
	}

	// Off leaves the runtime alone and says so.
	debug.SetMemoryLimit(oldLimit)
	logs.Reset()
	applyBudget(memBudget{source: "ingest.memory-budget off"}, false, log)
	if got := debug.SetMemoryLimit(-1); got != oldLimit {
		t.Errorf("off changed the Go memory limit to %d", got)
	}
	if !strings.Contains(logs.String(), "memory budget: off; the Go runtime's defaults apply to ingest alone") {
		t.Errorf("off start line: %s", logs.String())
	}
}

// gauge is the value of the gauge name in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && f.GetType() == dto.MetricType_GAUGE && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

func TestMemoryMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMemoryMetrics(reg, memBudget{bytes: 300 << 20, goLimit: 250 << 20}, true)
	const ns = "teleport_event_bus_ingest_"
	if got := gauge(t, reg, ns+"memory_budget_bytes"); got != 300<<20 {
		t.Errorf("budget %v", got)
	}
	// Nothing freed before the first reading is left to be returned to
	// the system between the two (the scavenger would make the growth
	// look smaller than it is).
	debug.FreeOSMemory()
	held, rss := gauge(t, reg, ns+"memory_bytes"), gauge(t, reg, ns+"memory_rss_bytes")
	if held < 1<<20 || rss < 1<<20 {
		t.Fatalf("memory %v, rss %v: too small to be this process", held, rss)
	}

	// 64 MiB more, touched so it is resident, shows in both.
	const grow = 64 << 20
	buf := make([]byte, grow)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	held2, rss2 := gauge(t, reg, ns+"memory_bytes"), gauge(t, reg, ns+"memory_rss_bytes")
	runtime.KeepAlive(buf)
	if held2-held < grow*0.9 || rss2-rss < grow*0.9 {
		t.Errorf("after allocating 64 MiB: memory %v → %v, rss %v → %v", held, held2, rss, rss2)
	}

	// The lease carries the same, and status prints it.
	lm := m.report()
	if lm.Budget != 300<<20 || !lm.Embedded || lm.RSS < 1<<20 || lm.Bytes < 1<<20 {
		t.Errorf("lease report %+v", lm)
	}
	if got := (&leaseMemory{RSS: 212_400_000, Budget: 256 << 20, Embedded: true}).line(); got != "Memory: 212 MB of 268 MB budget (embedded NATS server included)" {
		t.Errorf("status line %q", got)
	}
	if got := (&leaseMemory{RSS: 90_000_000}).line(); got != "Memory: 90 MB, no budget (ingest alone; NATS is external)" {
		t.Errorf("status line without a budget %q", got)
	}
	var nilMetrics *memoryMetrics
	if nilMetrics.report() != nil {
		t.Error("no metrics, yet a report")
	}
}

func TestStatusPrintsLeaseMemory(t *testing.T) {
	st := position.Memory()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	if err := st.Put(t.Context(), keyLease, json.RawMessage(`{"holder":"h/1/x","expires":"2026-12-02T12:00:10Z","ttl":"10s","memory":{"bytes":250000000,"rss":240000000,"budget":268435456,"embedded":true}}`)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printState(st, &out, now); err != nil {
		t.Fatal(err)
	}
	want := "Lease: held by h/1/x until 2026-12-02T12:00:10Z\nMemory: 240 MB of 268 MB budget (embedded NATS server included)\n"
	if !strings.HasSuffix(out.String(), want) {
		t.Errorf("status:\n%s\nwant it to end with:\n%s", out.String(), want)
	}
	// A lease from an ingest before the budget has no memory line.
	if err := st.Put(t.Context(), keyLease, json.RawMessage(`{"holder":"h/1/x","expires":"2026-12-02T12:00:10Z"}`)); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := printState(st, &out, now); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "Memory:") {
		t.Errorf("status without a memory report:\n%s", out.String())
	}
}

// TestWriteAllowance: writes are paced only to an embedded server under a
// budget, and the pace leaves the Go limit room for the rest of the heap.
func TestWriteAllowance(t *testing.T) {
	def, err := chooseBudget(config.MemoryBudget{}, func() (memlimit.Limit, bool, error) { return memlimit.Limit{}, false, nil })
	if err != nil {
		t.Fatal(err)
	}
	least, err := chooseBudget(config.MemoryBudget{Mode: config.BudgetSize, Bytes: config.MinMemoryBudget}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		mb       memBudget
		embedded bool
		want     int64
	}{
		{"default budget, embedded", def, true, 240<<20 - 96<<20},
		{"smallest budget, embedded", least, true, 208<<20 - 96<<20},
		{"default budget, external server", def, false, 0},
		{"off", memBudget{}, true, 0},
	} {
		if got := c.mb.writeAllowance(c.embedded); got != c.want {
			t.Errorf("%s: %s per window, want %s", c.name, config.FormatSize(got), config.FormatSize(c.want))
		}
		m := newMemoryMetrics(nil, c.mb, c.embedded)
		if p := m.pace(); (p != nil) != (c.want > 0) || (p != nil && p.Limit() != c.want) {
			t.Errorf("%s: pace %v, want a limit of %d", c.name, p, c.want)
		}
	}
}

// TestHeapPressure: the pace waits only once the live heap reaches the
// write allowance, read at most every heapPressureEvery.
func TestHeapPressure(t *testing.T) {
	var live atomic.Int64
	var reads atomic.Int64
	h := newHeapPressure(100, func() (int64, bool) { reads.Add(1); return live.Load(), true })
	live.Store(99)
	if h.pressed() {
		t.Fatal("pressed with the live heap under the threshold")
	}
	live.Store(100)
	time.Sleep(2 * heapPressureEvery)
	if !h.pressed() {
		t.Fatal("not pressed with the live heap at the threshold")
	}
	reads.Store(0)
	start := time.Now()
	for range 10_000 {
		h.pressed()
	}
	if n, most := reads.Load(), int64(time.Since(start)/heapPressureEvery)+1; n > most {
		t.Errorf("10,000 asks in %s read the live heap %d times, want at most %d", time.Since(start), n, most)
	}
	// A runtime that does not report the live heap: always pressed, the
	// pace as it was before it waited for pressure.
	unknown := newHeapPressure(100, func() (int64, bool) { return 0, false })
	if !unknown.pressed() {
		t.Error("not pressed when the live heap is unknown")
	}
	// The real runtime reports it.
	if n, ok := memlimit.LiveHeap(); !ok || n <= 0 {
		t.Errorf("memlimit.LiveHeap() = %d, %v; want a live heap", n, ok)
	}
}
