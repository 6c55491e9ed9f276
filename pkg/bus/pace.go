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
// budget (see WithPace): a send that would take the window's bytes over
// the limit waits until enough of the window has passed. A message larger
// than the limit waits for an empty window, then goes alone. It is safe
// for concurrent use; the zero value is not usable, see NewWritePace.
type WritePace struct {
	limit  int64
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	slots []paceEntry // oldest first; times never decrease
	total int64       // bytes of slots
}

// paceEntry is the bytes sent (or reserved) at one time.
type paceEntry struct {
	at    time.Time
	bytes int64
}

// NewWritePace returns a WritePace allowing limit bytes per
// ServerCacheWindow (limit > 0).
func NewWritePace(limit int64) *WritePace {
	return &WritePace{limit: limit, window: ServerCacheWindow, now: time.Now}
}

// Limit is the bytes allowed per window.
func (p *WritePace) Limit() int64 { return p.limit }

// reserve counts n bytes at the earliest time the window allows them and
// returns how long from now that is: how long the caller waits before
// sending them. A caller that then gives up leaves them counted, which
// only delays later sends.
func (p *WritePace) reserve(n int64) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.expire(now)
	at := now
	if last := len(p.slots) - 1; last >= 0 && p.slots[last].at.After(at) {
		at = p.slots[last].at // queued behind earlier waiters
	}
	// Drop from the oldest until n fits: the send goes when the last
	// dropped entry leaves the window.
	total := p.total
	for i := 0; total+n > p.limit && i < len(p.slots); i++ {
		total -= p.slots[i].bytes
		if leave := p.slots[i].at.Add(p.window); leave.After(at) {
			at = leave
		}
	}
	p.add(at, n)
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
