package sink

import (
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"
)

// startQueue runs a batchQueue whose output is collected on a channel.
func startQueue(b *Batcher) (*batchQueue, <-chan *Batch) {
	out := make(chan *Batch)
	q := newBatchQueue(b, out)
	go q.run()
	return q, out
}

// receive waits for the next batch, or fails after d.
func receive(t *testing.T, out <-chan *Batch, d time.Duration) *Batch {
	t.Helper()
	select {
	case b, ok := <-out:
		if !ok {
			t.Fatal("output closed, want a batch")
		}
		return b
	case <-time.After(d):
		t.Fatalf("no batch within %s", d)
		return nil
	}
}

// TestBatchQueueFullThenDue: full batches leave as they fill, from the
// adding goroutine; the partial one leaves when its wait runs out.
func TestBatchQueueFullThenDue(t *testing.T) {
	q, out := startQueue(&Batcher{MaxEvents: 3, Wait: 30 * time.Millisecond})
	go func() {
		for i := range 7 {
			q.add(item("a", i))
		}
	}()
	var got []*Batch
	for range 3 {
		got = append(got, receive(t, out, 10*time.Second))
	}
	if s := sizes(got); s != "a:3,a:3,a:1" {
		t.Fatalf("batches = %s", s)
	}
	if string(got[2].Items[0].Data) != `{"n":6}` {
		t.Errorf("last batch holds %s, want item 6", got[2].Items[0].Data)
	}
	go q.close()
	if b, ok := <-out; ok {
		t.Fatalf("batch %s after close, want the output closed", sizes([]*Batch{b}))
	}
}

// TestBatchQueueCloseFlushes: close sends the open batches at once, whatever
// their wait, then closes the output.
func TestBatchQueueCloseFlushes(t *testing.T) {
	q, out := startQueue(&Batcher{MaxEvents: 100, Wait: time.Hour})
	q.add(item("a", 1))
	q.add(item("b", 2))
	q.add(item("a", 3))
	go q.close()
	var got []*Batch
	for b := range out {
		got = append(got, b)
	}
	if n := batchItemCount(got); len(got) != 2 || n != 3 {
		t.Fatalf("batches after close = %s, want a:2 and b:1", sizes(got))
	}
}

// TestBatchQueueConcurrentAdds: two consumers adding at once (audit and
// session streams) lose and repeat nothing; every batch holds one URL.
func TestBatchQueueConcurrentAdds(t *testing.T) {
	q, out := startQueue(&Batcher{MaxEvents: 7, Wait: 5 * time.Millisecond})
	const each = 500
	var wg sync.WaitGroup
	for _, url := range []string{"audit", "session"} {
		wg.Go(func() {
			for i := range each {
				q.add(Item{URL: url, Data: json.RawMessage(`{"url":"` + url + `","n":` + strconv.Itoa(i) + `}`)})
			}
		})
	}
	go func() {
		wg.Wait()
		q.close()
	}()
	seen := map[string]int{}
	for b := range out {
		for _, it := range b.Items {
			if it.URL != b.URL {
				t.Fatalf("item for %s in a batch for %s", it.URL, b.URL)
			}
			seen[string(it.Data)]++
		}
	}
	if len(seen) != 2*each {
		t.Fatalf("%d distinct items arrived, want %d", len(seen), 2*each)
	}
	for d, n := range seen {
		if n != 1 {
			t.Fatalf("item %s arrived %d times", d, n)
		}
	}
}

func batchItemCount(bs []*Batch) int {
	n := 0
	for _, b := range bs {
		n += len(b.Items)
	}
	return n
}
