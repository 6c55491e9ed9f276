package sink

import (
	"runtime/debug"
	"testing"
)

// gcSettings reads GOGC and the memory limit in force.
func gcSettings() (percent int, limit int64) {
	percent = debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	return percent, debug.SetMemoryLimit(-1)
}

// TestGCTuningAppliesAndRestores: without GOGC and GOMEMLIMIT in the
// environment Run's tuning is in force while it runs, and the previous
// settings come back afterwards; a GOGC from the environment is left alone.
func TestGCTuningAppliesAndRestores(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	p0, l0 := gcSettings()
	restore := setGCTuning()
	if p, l := gcSettings(); p != sinkGCPercent || l != sinkMemoryLimit {
		t.Errorf("during Run: GOGC %d, limit %d; want %d, %d", p, l, sinkGCPercent, sinkMemoryLimit)
	}
	restore()
	if p, l := gcSettings(); p != p0 || l != l0 {
		t.Errorf("after Run: GOGC %d, limit %d; want %d, %d", p, l, p0, l0)
	}

	t.Setenv("GOGC", "150")
	t.Setenv("GOMEMLIMIT", "1GiB")
	restore = setGCTuning()
	if p, l := gcSettings(); p != p0 || l != l0 {
		t.Errorf("with GOGC and GOMEMLIMIT set: GOGC %d, limit %d; want them untouched (%d, %d)", p, l, p0, l0)
	}
	restore()
}
