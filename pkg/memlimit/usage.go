package memlimit

import (
	"fmt"
	"io/fs"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
)

// goHeld are the runtime/metrics samples GoHeld reads.
var goHeldSamples = []string{"/memory/classes/total:bytes", "/memory/classes/heap/released:bytes"}

// GoHeld is the memory the Go runtime holds from the operating system and
// has not released: what runtime/debug.SetMemoryLimit limits. In ingest it
// includes the embedded NATS server, which runs in the process. Reading it
// does not stop the world.
func GoHeld() int64 {
	s := make([]metrics.Sample, len(goHeldSamples))
	for i, n := range goHeldSamples {
		s[i].Name = n
	}
	metrics.Read(s)
	total, released := s[0].Value.Uint64(), s[1].Value.Uint64()
	return int64(total - released)
}

// RSS is the process's resident set size from /proc/self/statm, in root
// (the file system at "/").
func RSS(root fs.FS) (int64, error) {
	data, err := fs.ReadFile(root, "proc/self/statm")
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/statm: %w", err)
	}
	// size resident shared text lib data dt, in pages
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/self/statm: %q has no resident field", strings.TrimSpace(string(data)))
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: resident %q is not a number", f[1])
	}
	return pages * int64(os.Getpagesize()), nil
}

// LiveHeap is the heap the last garbage collection found live: what no
// collection can free until its holders let go (the embedded server's
// block caches among it). It changes only when a collection ends. ok is
// false when the runtime does not report it.
func LiveHeap() (live int64, ok bool) {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0, false
	}
	return int64(s[0].Value.Uint64()), true
}
