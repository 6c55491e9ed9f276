package sink

import (
	"sync"
	"time"
)

// batchQueue puts a Batcher between the consumers and the request slots.
// The consumers' goroutines add items to it directly, under a mutex, and
// hand over the batches that fill up; a goroutine of its own (run) sends
// the batches whose wait ran out. An item thus costs an uncontended lock
// instead of a channel send and a goroutine wake-up, which at full speed
// was a large part of the sink's CPU per event; the timer is touched once
// per batch, not once per item.
//
// While delivery is paused (pause's channel closed: the breaker is open),
// a ready batch no request slot takes at once is released (its messages
// NAKed for a prompt redelivery) instead of waiting for slots that hold
// their own batches: the consumers' goroutines never block then, so the
// messages the client has buffered reach the intake, which hands them back
// too, and nothing sits unacknowledged past its ack wait to come back as a
// duplicate.
type batchQueue struct {
	out chan<- *Batch
	// pause and release are optional (set both, or neither).
	pause   func() <-chan struct{}
	release func([]Item)

	mu sync.Mutex
	b  *Batcher

	// wake tells run that a batch was opened and stays open, so the timer
	// may have to fire earlier.
	wake chan struct{}
	stop chan struct{} // close was called
	done chan struct{} // run returned
}

func newBatchQueue(b *Batcher, out chan<- *Batch) *batchQueue {
	return &batchQueue{
		out:  out,
		b:    b,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// add puts it into its batch and sends the batches that became ready,
// blocking while every request slot is busy (which holds the consumer back,
// as intended).
func (q *batchQueue) add(it Item) {
	q.mu.Lock()
	ready := q.b.Add(it)
	opened := q.b.justOpened(it.URL)
	q.mu.Unlock()
	if opened {
		select {
		case q.wake <- struct{}{}:
		default: // run is already told
		}
	}
	for _, bt := range ready {
		q.send(bt)
	}
}

// send hands bt to a request slot, or releases it while delivery is
// paused and no slot is free.
func (q *batchQueue) send(bt *Batch) {
	var paused <-chan struct{}
	if q.pause != nil {
		paused = q.pause()
	}
	select {
	case q.out <- bt:
	case <-paused:
		q.release(bt.Items)
	}
}

// run sends the batches whose wait has run out until close is called.
func (q *batchQueue) run() {
	defer close(q.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		at, ok := q.b.Next()
		q.mu.Unlock()
		var due <-chan time.Time
		if ok {
			timer.Reset(time.Until(at))
			due = timer.C
		}
		select {
		case <-q.stop:
			return
		case <-q.wake:
		case now := <-due:
			q.mu.Lock()
			ready := q.b.Due(now)
			q.mu.Unlock()
			for _, bt := range ready {
				q.send(bt)
			}
		}
	}
}

// close is called once no more items will be added: it stops run, sends
// what is left in open batches and closes the output.
func (q *batchQueue) close() {
	close(q.stop)
	<-q.done
	q.mu.Lock()
	ready := q.b.Flush()
	q.mu.Unlock()
	for _, bt := range ready {
		q.send(bt)
	}
	close(q.out)
}
