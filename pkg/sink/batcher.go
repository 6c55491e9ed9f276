package sink

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Item is one event on its way to Fluentd: the URL it goes to, its JSON
// (the message body, unchanged) and the message to settle once Fluentd has
// answered. Msg is nil in pure batching tests.
type Item struct {
	URL  string
	Data json.RawMessage
	Msg  jetstream.Msg
	// Stream is the stream the message came from, for metrics and logs.
	Stream string
	// Received is when the sink fetched the message, to decide how much of
	// its ack wait is left.
	Received time.Time
}

// Batch is a run of items for one URL, sent as one request.
type Batch struct {
	URL   string
	Items []Item
	Bytes int
	// due is when the batch must be sent even if not full.
	due time.Time
}

// Records returns the items' JSON, in order.
func (b *Batch) Records() []json.RawMessage { return records(b.Items) }

func records(items []Item) []json.RawMessage {
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		out[i] = it.Data
	}
	return out
}

// Batcher groups items per URL into batches of at most MaxEvents items and
// MaxBytes bytes of JSON; a batch that does not fill up is due Wait after it
// was opened. It is pure logic with no goroutine of its own: the caller adds
// items, asks what is due, and sends what it gets back. A single item larger
// than MaxBytes travels alone.
//
// The wait counts from the opening, not from the item's fetch time: items
// that queued while every request slot was busy would otherwise open batches
// already overdue, and under back-pressure batches would go out nearly empty.
type Batcher struct {
	MaxEvents int
	MaxBytes  int
	Wait      time.Duration
	// Clock is read once per batch opened; nil means time.Now.
	Clock func() time.Time

	open map[string]*Batch
}

// maxPrealloc bounds the items a new batch makes room for at once.
const maxPrealloc = 1024

// Add puts it into the open batch for its URL, opening one if there is none.
// It returns the batches that became ready: the previous batch when it comes
// out full, or when it has no room left for this item.
func (b *Batcher) Add(it Item) []*Batch {
	if b.open == nil {
		b.open = make(map[string]*Batch)
	}
	var ready []*Batch
	cur := b.open[it.URL]
	if cur != nil && b.MaxBytes > 0 && cur.Bytes+len(it.Data)+1 > b.MaxBytes {
		ready = append(ready, cur)
		delete(b.open, it.URL)
		cur = nil
	}
	if cur == nil {
		// Sized for a full batch up front (within reason), so a batch
		// does not reallocate its items as it fills.
		cur = &Batch{URL: it.URL, due: b.now().Add(b.Wait), Items: make([]Item, 0, min(max(b.MaxEvents, 1), maxPrealloc))}
		b.open[it.URL] = cur
	}
	cur.Items = append(cur.Items, it)
	cur.Bytes += len(it.Data) + 1
	if len(cur.Items) >= max(b.MaxEvents, 1) || (b.MaxBytes > 0 && cur.Bytes >= b.MaxBytes) {
		ready = append(ready, cur)
		delete(b.open, it.URL)
	}
	return ready
}

// justOpened reports whether url's open batch holds a single item: the one
// just added opened it, and it waits to fill up.
func (b *Batcher) justOpened(url string) bool {
	cur := b.open[url]
	return cur != nil && len(cur.Items) == 1
}

func (b *Batcher) now() time.Time {
	if b.Clock != nil {
		return b.Clock()
	}
	return time.Now()
}

// Due removes and returns the batches whose wait has run out at now.
func (b *Batcher) Due(now time.Time) []*Batch {
	var ready []*Batch
	for url, cur := range b.open {
		if !now.Before(cur.due) {
			ready = append(ready, cur)
			delete(b.open, url)
		}
	}
	return ready
}

// Next is when the earliest open batch is due; ok is false when none is open.
func (b *Batcher) Next() (at time.Time, ok bool) {
	for _, cur := range b.open {
		if !ok || cur.due.Before(at) {
			at, ok = cur.due, true
		}
	}
	return at, ok
}

// Flush removes and returns every open batch, full or not.
func (b *Batcher) Flush() []*Batch {
	var ready []*Batch
	for url, cur := range b.open {
		ready = append(ready, cur)
		delete(b.open, url)
	}
	return ready
}

// Len is the number of items in open batches.
func (b *Batcher) Len() int {
	n := 0
	for _, cur := range b.open {
		n += len(cur.Items)
	}
	return n
}
