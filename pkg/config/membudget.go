package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MinMemoryBudget is the smallest ingest.memory-budget: the smallest budget
// measured to hold ingest and the embedded NATS server through a backfill
// of any length. Measured with `make bench` (1,000,000 events): peak RSS
// 258-263 MB at 256MiB (268 MB), which holds; 224 MB at 192MiB (201 MB) and
// 173 MB at 128MiB (134 MB), which do not: the server's write and pooled
// 8 MB block buffers and the duplicate window's ids stay live (about
// 130-140 MB after a collection) whatever the Go limit. A small backfill
// (50,000 events) fits 96MiB, but a budget is only worth having if it holds
// whatever the backfill, so a smaller one is refused at start.
const MinMemoryBudget = 256 << 20

// MinAutoLimit is the smallest cgroup memory limit under which "auto"
// (3/4 of it) reaches MinMemoryBudget, rounded up to a MiB.
const MinAutoLimit = (MinMemoryBudget*4/3 + 1<<20 - 1) / (1 << 20) * (1 << 20)

// DefaultMemoryBudget is the budget of "auto" when no cgroup memory limit
// applies to the process, and the one "auto" makes of the 384 MiB limit
// of deploy/'s unit and chart. With ingest.max-in-flight's default and
// only the benchmark on a 2-core machine (2026-12-07), the backfill
// `BENCH_EVENTS=1000000 BENCH_PAIRS=2 … make bench` kept 95.1% and 106.6%
// of the budget-off events/s twice back to back, and the whole benchmark
// 97.6% and 90.5%, with ingest peaking at 268-277 MiB: the sink read
// behind ingest, where the server drops the block caches, so the write
// pace never waited. Where the sink reads right behind, the pace holds
// ingest to 144MiB per 11 s while the live heap shows the caches held
// (about 21,200 events/s of 647 bytes; docs/deployment.md, Memory).
const DefaultMemoryBudget = 288 << 20

// BudgetMode says how ingest.memory-budget was given.
type BudgetMode int

const (
	// BudgetAuto (the zero value) follows the cgroup memory limit (3/4 of
	// it), or DefaultMemoryBudget without one.
	BudgetAuto BudgetMode = iota
	// BudgetOff sets no budget: the Go runtime's defaults.
	BudgetOff
	// BudgetSize is a size the user gave, in MemoryBudget.Bytes.
	BudgetSize
)

// MemoryBudget is the value of ingest.memory-budget: "auto", "off" or a
// size. The zero value is "auto".
type MemoryBudget struct {
	Mode BudgetMode
	// Bytes is the size when Mode is BudgetSize, else 0.
	Bytes int64
}

// sizeUnits are the accepted units, lower case: decimal (kB, MB, GB) and
// binary (KiB, MiB, GiB) multiples of a byte.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1000, "mb": 1000 * 1000, "gb": 1000 * 1000 * 1000,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
}

// ParseMemoryBudget reads "auto", "off" or a size: plain bytes, or a whole
// number with a unit B, KB/MB/GB (powers of 1000) or KiB/MiB/GiB (powers of
// 1024), case-insensitive, e.g. "384MiB", "1GiB", "400MB", "268435456".
func ParseMemoryBudget(s string) (MemoryBudget, error) {
	v := strings.TrimSpace(s)
	switch strings.ToLower(v) {
	case "auto":
		return MemoryBudget{Mode: BudgetAuto}, nil
	case "off":
		return MemoryBudget{Mode: BudgetOff}, nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return MemoryBudget{}, fmt.Errorf("must be \"auto\", \"off\" or a size such as \"384MiB\", \"1GiB\" or \"400MB\": %w", err)
	}
	return MemoryBudget{Mode: BudgetSize, Bytes: n}, nil
}

// ParseSize reads a size in bytes: a whole number, optionally followed by
// a unit (see ParseMemoryBudget).
func ParseSize(s string) (int64, error) {
	v := strings.TrimSpace(s)
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q does not start with a number of bytes", s)
	}
	unit := strings.ToLower(strings.TrimSpace(v[i:]))
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q (use B, KB, MB, GB, KiB, MiB or GiB)", s, strings.TrimSpace(v[i:]))
	}
	n, err := strconv.ParseInt(v[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// FormatSize renders n bytes in GiB or MiB when one divides it exactly
// ("384MiB", "1GiB"), else as plain bytes.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// String is the value as the file would spell it: "auto", "off" or a size.
func (b MemoryBudget) String() string {
	switch b.Mode {
	case BudgetOff:
		return "off"
	case BudgetSize:
		return FormatSize(b.Bytes)
	}
	return "auto"
}

// MinMemoryBudgetWhy says why a budget below MinMemoryBudget is refused:
// what heap profiles of a 1,000,000-event backfill show stays live
// (docs/deployment.md, "Where the memory goes").
const MinMemoryBudgetWhy = "the embedded NATS server's block caches and duplicate-window ids hold 150-200 MB live through a backfill, and the Go collector needs room above them"

// checkMemoryBudget refuses a size below MinMemoryBudget.
func checkMemoryBudget(c *Config, k *key) error {
	b := *k.field(c).(*MemoryBudget)
	if b.Mode == BudgetSize && b.Bytes < MinMemoryBudget {
		return c.errAt(k, "%s is below the smallest budget ingest runs in, %s; set at least %s, or \"off\" (%s)",
			FormatSize(b.Bytes), FormatSize(MinMemoryBudget), FormatSize(MinMemoryBudget), MinMemoryBudgetWhy)
	}
	return nil
}
