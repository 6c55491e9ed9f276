package bus

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ServerCacheWindow is how long nats-server keeps a file-store message
// block's cache after the block was last written or read: its fixed 10 s
// cache expiry (defaultCacheBufferExpiration, not settable) plus a second
// of its timer's slack. While a consumer reads at the tail of a stream,
// the server cannot drop the cache of a block it wrote to in that time
// (reads keep it, the last write keeps it from a forced expiry), and Go's
// garbage collector cannot free it either: it is held strongly. So the
// server holds about the bytes stored in the last ServerCacheWindow, in
// 8 MB block buffers, whatever the Go memory limit.
const ServerCacheWindow = 11 * time.Second

// paceSlot is the granularity of WritePace's accounting: sends within it
// are counted together, so its memory stays a few hundred entries whatever
// the rate.
const paceSlot = 100 * time.Millisecond

// WritePace holds the bytes stored per ServerCacheWindow to a limit, so
// that the block caches of an embedded nats-server stay within a memory
// budget (see WithPace): while the window's bytes are at the limit, a
// send waits until enough of them have left the window. A message larger
// than the limit waits for an empty window, then goes alone.
//
// With WhenPressed, the limit applies only while the pressure function
// says memory is short: the window's bytes are the most the caches can
// hold, and they hold less when nothing reads right behind the writes
// (the server then drops a block's cache when the block fills), so the
// pace need not wait until memory shows it. It is safe for concurrent
// use; the zero value is not usable, see NewWritePace.
type WritePace struct {
	limit   int64
	window  time.Duration
	now     func() time.Time
	pressed func() bool // WhenPressed's; nil: the limit always applies

	mu    sync.Mutex
	slots []paceEntry // oldest first; times never decrease
	total int64       // bytes of slots
}

// paceEntry is the bytes sent at one time.
type paceEntry struct {
	at    time.Time
	bytes int64
}

// NewWritePace returns a WritePace allowing limit bytes per
// ServerCacheWindow (limit > 0).
func NewWritePace(limit int64) *WritePace {
	return &WritePace{limit: limit, window: ServerCacheWindow, now: time.Now}
}

// WhenPressed makes the limit apply only while pressed returns true: a
// send that finds it false goes at once, and is counted. pressed is
// called, under the pace's lock, only when a send would otherwise wait.
// It returns p.
func (p *WritePace) WhenPressed(pressed func() bool) *WritePace {
	p.pressed = pressed
	return p
}

// Limit is the bytes allowed per window.
func (p *WritePace) Limit() int64 { return p.limit }

// reserve counts n bytes as sent now and returns 0 when the window has
// room for them (or memory is not short, see WhenPressed); otherwise it
// counts nothing and returns how long from now the window will have room,
// when the caller asks again.
func (p *WritePace) reserve(n int64) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.expire(now)
	if p.total == 0 || p.total+n <= p.limit || (p.pressed != nil && !p.pressed()) {
		p.add(now, n)
		return 0
	}
	// Drop from the oldest until n fits: room comes when the last
	// dropped entry leaves the window.
	total, at := p.total, now
	for i := 0; total+n > p.limit && i < len(p.slots); i++ {
		total -= p.slots[i].bytes
		at = p.slots[i].at.Add(p.window)
	}
	return at.Sub(now)
}

// expire drops the entries that left the window by now.
func (p *WritePace) expire(now time.Time) {
	i := 0
	for i < len(p.slots) && !p.slots[i].at.Add(p.window).After(now) {
		p.total -= p.slots[i].bytes
		i++
	}
	p.slots = append(p.slots[:0], p.slots[i:]...)
}

// add counts n bytes at, merged into the last entry when within a slot of
// it.
func (p *WritePace) add(at time.Time, n int64) {
	p.total += n
	if last := len(p.slots) - 1; last >= 0 && at.Sub(p.slots[last].at) < paceSlot {
		p.slots[last].bytes += n
		return
	}
	p.slots = append(p.slots, paceEntry{at: at, bytes: n})
}

// StoredSize is about the bytes m takes in a file-store block: subject,
// headers as sent, body, and the record's framing.
func StoredSize(m *nats.Msg) int64 {
	const record = 22 + 8     // length, sequence, time, subject length; hash
	const headerLine = 10 + 2 // "NATS/1.0\r\n" … final "\r\n"
	n := int64(record + headerLine + len(m.Subject) + len(m.Data))
	for k, vs := range m.Header {
		for _, v := range vs {
			n += int64(len(k) + 2 + len(v) + 2) // "k: v\r\n"
		}
	}
	return n
}
