package ingest

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/memlimit"
)

// The memory budget (ingest.memory-budget) holds ingest, and the embedded
// NATS server running in its process, to a size. Heap profiles of a
// backfill (docs/deployment.md, "Where the memory goes") show two kinds
// of memory, and the budget bounds each where it comes from:
//
//   - The server's block caches, two thirds of the live heap: nats-server
//     keeps the cache of every block written in the last 10 s, strongly,
//     while the sink reads at the tail, so no collection frees them. They
//     grow with the rate of writes, and the budget paces the writes
//     (writeAllowance, bus.WithPace).
//   - Everything else, and the garbage between collections: the Go
//     runtime's soft memory limit, a safety net that the paced caches
//     leave room under, so the collector does not run continuously.

// The Go runtime's memory limit is the budget less headroom for what the
// limit does not see (the program's text and data, about 25 MB resident)
// and for the runtime overshooting a soft limit under load, so that the
// resident set stays under the budget: an eighth of the budget, and at
// least minHeadroom. Measured with `make bench` (1,000,000 events): RSS
// peaked 29-39 MiB above the Go limit (281-291 MiB with a 252MiB limit,
// budget 288MiB, when the headroom was at least 32MiB).
const minHeadroom = 48 << 20

// goLimit is the Go memory limit that holds the resident set to budget.
func goLimit(budget int64) int64 {
	return budget - max(budget/8, minHeadroom)
}

// cacheReserve is what the Go memory limit keeps beside the embedded
// server's block caches: the rest of the live heap (the duplicate
// window's ids, the pooled and current block buffers, gRPC's receive
// windows, ingest's own: 45-60 MB in a profile of a 1,000,000-event
// backfill, docs/deployment.md) and room for the collector above it (40
// to 50 MB kept the budget at 95% of the budget-off rate).
const cacheReserve = 96 << 20

// writeAllowance is the bytes ingest may store into the embedded server
// per bus.ServerCacheWindow under the budget: the server holds the block
// caches of everything stored in that window, strongly, so no collection
// frees them and only the rate of writes bounds them. 0 (no pacing) when
// the budget is off or the server is external (its memory is not
// ingest's).
func (mb memBudget) writeAllowance(embedded bool) int64 {
	if mb.bytes == 0 || !embedded {
		return 0
	}
	return mb.goLimit - cacheReserve
}

// budgetGCPercent is the GC percent while a budget is set: collections are
// paced by the memory limit, and by GOGC while the heap is small (in a live
// tail the heap stays well under the limit). Measured against GOGC=off
// with the same limit (`make bench`, 1,000,000 events, two runs each): as
// fast or faster, and the same peak RSS.
const budgetGCPercent = 100

// memBudget is the budget ingest runs with.
type memBudget struct {
	// bytes is the budget; 0 when off.
	bytes int64
	// source says where it came from, for the start line.
	source string
	// goLimit is the Go runtime memory limit that enforces it.
	goLimit int64
}

// chooseBudget resolves ingest.memory-budget: a size given wins; "auto"
// takes 3/4 of the cgroup memory limit detect finds, or the default; "off"
// is no budget. A budget below config.MinMemoryBudget is an error naming
// the key.
func chooseBudget(b config.MemoryBudget, detect func() (memlimit.Limit, bool, error)) (memBudget, error) {
	var out memBudget
	switch b.Mode {
	case config.BudgetOff:
		return memBudget{source: "ingest.memory-budget off"}, nil
	case config.BudgetSize:
		out = memBudget{bytes: b.Bytes, source: "ingest.memory-budget"}
	default:
		lim, ok, err := detect()
		switch {
		case err != nil:
			out = memBudget{bytes: config.DefaultMemoryBudget, source: fmt.Sprintf("default: the cgroup memory limit could not be read: %v", err)}
		case ok:
			out = memBudget{bytes: lim.Bytes / 4 * 3, source: fmt.Sprintf("3/4 of the cgroup memory limit %s in %s", config.FormatSize(lim.Bytes), lim.File)}
			if out.bytes < config.MinMemoryBudget {
				return memBudget{}, fmt.Errorf("key \"ingest.memory-budget\": auto is %s, 3/4 of the cgroup memory limit %s in %s, below the smallest budget ingest runs in, %s: raise the memory limit to at least %s",
					config.FormatSize(out.bytes), config.FormatSize(lim.Bytes), lim.File, config.FormatSize(config.MinMemoryBudget), config.FormatSize(config.MinAutoLimit))
			}
		default:
			out = memBudget{bytes: config.DefaultMemoryBudget, source: "default: no cgroup memory limit"}
		}
	}
	if out.bytes < config.MinMemoryBudget {
		// Load refuses this already; kept for configurations built in code.
		return memBudget{}, fmt.Errorf("key \"ingest.memory-budget\": %s is below the smallest budget ingest runs in, %s",
			config.FormatSize(out.bytes), config.FormatSize(config.MinMemoryBudget))
	}
	out.goLimit = goLimit(out.bytes)
	return out, nil
}

// startBudget chooses the budget (the cgroup limit read from the real
// file system) and sets it; it runs before the embedded server starts.
// Run logs it (logBudget) once the store is open, so that a refused start
// (a store another ingest holds) stays one line.
func startBudget(cfg *config.Config) (memBudget, error) {
	mb, err := chooseBudget(cfg.Ingest.MemoryBudget, func() (memlimit.Limit, bool, error) {
		return memlimit.Detect(memlimit.Root())
	})
	if err != nil {
		return memBudget{}, err
	}
	setBudget(mb)
	return mb, nil
}

// applyBudget sets the budget and logs the line that says what was
// chosen.
func applyBudget(mb memBudget, embedded bool, log zerolog.Logger) {
	setBudget(mb)
	logBudget(mb, embedded, log)
}

// setBudget sets the Go runtime's memory limit and GC percent for the
// budget. Off leaves the runtime's settings as they are (GOGC,
// GOMEMLIMIT).
func setBudget(mb memBudget) {
	if mb.bytes == 0 {
		return
	}
	debug.SetMemoryLimit(mb.goLimit)
	debug.SetGCPercent(budgetGCPercent)
}

// logBudget logs the budget, where it came from and the Go limit.
func logBudget(mb memBudget, embedded bool, log zerolog.Logger) {
	scope := "ingest alone (the NATS server is external)"
	if embedded {
		scope = "ingest and the embedded NATS server"
	}
	if mb.bytes == 0 {
		log.Info().Str("source", mb.source).Msgf("memory budget: off; the Go runtime's defaults apply to %s", scope)
		return
	}
	pace := ""
	if w := mb.writeAllowance(embedded); w > 0 {
		pace = fmt.Sprintf("; writes to the server paced to %s per %s", config.FormatSize(w), bus.ServerCacheWindow)
	}
	log.Info().Int64("budget_bytes", mb.bytes).Str("source", mb.source).Int64("go_memory_limit_bytes", mb.goLimit).
		Msgf("memory budget: %s for %s (%s); Go memory limit %s%s", config.FormatSize(mb.bytes), scope, mb.source, config.FormatSize(mb.goLimit), pace)
}

// memoryMetrics are the memory series: the budget, and what the process
// holds, read when /metrics is scraped.
type memoryMetrics struct {
	budget, held, rss prometheus.Gauge
	budgetBytes       int64
	embedded          bool
	// writeAllowance is memBudget.writeAllowance: 0, no pacing.
	writeAllowance int64
}

// newMemoryMetrics creates the memory series and registers them in reg
// (nil: not registered).
func newMemoryMetrics(reg prometheus.Registerer, mb memBudget, embedded bool) *memoryMetrics {
	const ns, sub = "teleport_event_bus", "ingest"
	m := &memoryMetrics{
		budget: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "memory_budget_bytes", Help: "The memory budget ingest keeps to (ingest.memory-budget), the embedded NATS server included; 0 when off."}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "memory_bytes", Help: "Memory the Go runtime holds from the system and has not released (what the budget's Go limit counts), the embedded NATS server included."}),
		rss: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "memory_rss_bytes", Help: "Resident set size of the ingest process (/proc/self/statm), the embedded NATS server included."}),
		budgetBytes:    mb.bytes,
		embedded:       embedded,
		writeAllowance: mb.writeAllowance(embedded),
	}
	m.budget.Set(float64(mb.bytes))
	if reg != nil {
		reg.MustRegister(m)
	}
	return m
}

// pace is a new pace for a Publisher to the embedded server under the
// budget; nil without one.
func (m *memoryMetrics) pace() *bus.WritePace {
	if m == nil || m.writeAllowance <= 0 {
		return nil
	}
	return bus.NewWritePace(m.writeAllowance).WhenPressed(newHeapPressure(m.writeAllowance, memlimit.LiveHeap).pressed)
}

// heapPressure says memory is short while the live heap is at least the
// write allowance: the block caches the pace bounds are live heap, and
// they reach the allowance only when the sink reads right behind ingest
// (a read keeps a block's cache; a block nothing read is dropped once it
// fills). Until then the pace does not wait, so a budget costs no speed
// where the caches do not grow. The live heap changes only when a
// collection ends; it is read at most every heapPressureEvery. A runtime
// that does not report it counts as pressed: the pace then always
// applies, as it did before it waited for pressure.
type heapPressure struct {
	threshold int64
	live      func() (int64, bool)

	mu     sync.Mutex
	read   time.Time
	result bool
}

// heapPressureEvery is how often heapPressure reads the live heap at most.
const heapPressureEvery = 10 * time.Millisecond

func newHeapPressure(threshold int64, live func() (int64, bool)) *heapPressure {
	return &heapPressure{threshold: threshold, live: live}
}

// pressed reports whether the live heap was at the threshold when last
// read.
func (h *heapPressure) pressed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := time.Now(); now.Sub(h.read) >= heapPressureEvery {
		live, ok := h.live()
		h.read, h.result = now, !ok || live >= h.threshold
	}
	return h.result
}

// sample reads what the process holds now; rss is 0 when /proc cannot be
// read (not Linux).
func (m *memoryMetrics) sample() (held, rss int64) {
	held = memlimit.GoHeld()
	rss, err := memlimit.RSS(memlimit.Root())
	if err != nil {
		rss = 0
	}
	return held, rss
}

// Describe implements prometheus.Collector.
func (m *memoryMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.budget.Describe(ch)
	m.held.Describe(ch)
	m.rss.Describe(ch)
}

// Collect implements prometheus.Collector: it samples, then reports.
func (m *memoryMetrics) Collect(ch chan<- prometheus.Metric) {
	held, rss := m.sample()
	m.held.Set(float64(held))
	m.rss.Set(float64(rss))
	m.budget.Collect(ch)
	m.held.Collect(ch)
	m.rss.Collect(ch)
}

// leaseMemory is the memory report the leader writes into its lease, for
// `ingest status`.
type leaseMemory struct {
	Bytes    int64 `json:"bytes"`
	RSS      int64 `json:"rss"`
	Budget   int64 `json:"budget"`
	Embedded bool  `json:"embedded"`
}

// report is the memory report for the lease; nil without metrics.
func (m *memoryMetrics) report() *leaseMemory {
	if m == nil {
		return nil
	}
	held, rss := m.sample()
	return &leaseMemory{Bytes: held, RSS: rss, Budget: m.budgetBytes, Embedded: m.embedded}
}

// line is the report as `ingest status` prints it, e.g. "Memory: 212 MB of
// 268 MB budget (embedded NATS server included)". MB are 10^6 bytes, as
// the benchmark reports RSS.
func (lm *leaseMemory) line() string {
	scope := "embedded NATS server included"
	if !lm.Embedded {
		scope = "ingest alone; NATS is external"
	}
	used := fmt.Sprintf("%d MB", lm.RSS/1_000_000)
	if lm.RSS == 0 {
		used = fmt.Sprintf("%d MB held by the Go runtime", lm.Bytes/1_000_000)
	}
	if lm.Budget == 0 {
		return fmt.Sprintf("Memory: %s, no budget (%s)", used, scope)
	}
	return fmt.Sprintf("Memory: %s of %d MB budget (%s)", used, lm.Budget/1_000_000, scope)
}
