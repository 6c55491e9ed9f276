package teleportsim

import (
	"runtime"
	"testing"
	"time"

	apievents "github.com/gravitational/teleport/api/types/events"
)

// BenchmarkGenerateMillion measures backfill generation of 1,000,000 events
// and reports the heap it keeps.
func BenchmarkGenerateMillion(b *testing.B) {
	opts, err := Options{Seed: 1, Events: 1_000_000, Sessions: 20_000, From: baseTime, To: baseTime.Add(30 * 24 * time.Hour)}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	var st *store
	for b.Loop() {
		st = generate(opts)
	}
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.ReportMetric(float64(m.HeapAlloc)/(1<<20), "heap-MiB")
	runtime.KeepAlive(st)
}

// BenchmarkRenderUnstructured measures turning one audit record into the
// JSON form the API returns.
func BenchmarkRenderUnstructured(b *testing.B) {
	opts, err := Options{Seed: 1, Events: 10_000, Sessions: 300, From: baseTime, To: baseTime.Add(24 * time.Hour)}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	st := generate(opts)
	i := 0
	for b.Loop() {
		id := uint32(i % len(st.recs))
		if _, err := apievents.ToUnstructured(st.render(hit{id, st.recs[id]})); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
