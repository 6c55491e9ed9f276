package reader

import (
	"slices"
	"sync"
	"time"
)

// job is a recording to stream once notBefore has passed.
type job struct {
	sid       string
	notBefore time.Time
	attempt   int
	missing   bool  // the last attempt found no recording
	next      int64 // the saved next index when the last attempt failed
}

// queue holds the recording jobs not finished — waiting, each due at its
// notBefore, or running — and hands out the due ones, at most limit
// running at once. Every change that may make a job due sooner signals
// wake.
type queue struct {
	mu      sync.Mutex
	waiting []job           // in no particular order
	known   map[string]bool // waiting or running
	running int
	wake    chan struct{}
	// size is told the number of jobs not finished (the pending gauge).
	size func(int)
}

func newQueue(size func(int)) *queue {
	return &queue{known: map[string]bool{}, wake: make(chan struct{}, 1), size: size}
}

// add queues a new job, due at once.
func (q *queue) add(sid string) {
	q.mu.Lock()
	q.waiting = append(q.waiting, job{sid: sid})
	q.known[sid] = true
	q.size(len(q.known))
	q.mu.Unlock()
	q.signal()
}

// take takes the next due job if a slot of limit is free; otherwise it
// says how long to wait at most before asking again.
func (q *queue) take(limit int) (job, time.Duration, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	wait := time.Hour
	if q.running >= limit {
		return job{}, wait, false
	}
	now := time.Now()
	for i, j := range q.waiting {
		if d := j.notBefore.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		q.waiting = slices.Delete(q.waiting, i, i+1)
		q.running++
		return j, 0, true
	}
	return job{}, wait, false
}

// release frees the slot of a job whose try ended; the job is then
// either requeued or done.
func (q *queue) release() {
	q.mu.Lock()
	q.running--
	q.mu.Unlock()
	q.signal()
}

// requeue puts a released job back, due at its notBefore.
func (q *queue) requeue(j job) {
	q.mu.Lock()
	q.waiting = append(q.waiting, j)
	q.mu.Unlock()
	q.signal()
}

// done forgets a released job for good.
func (q *queue) done(sid string) {
	q.mu.Lock()
	delete(q.known, sid)
	q.size(len(q.known))
	q.mu.Unlock()
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// idle reports whether no job is waiting or running.
func (q *queue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.known) == 0
}

// onlyMissing reports how many jobs are left when every one of them is
// waiting for a recording that was not there and its next try is not due
// yet (0 and false otherwise). A due job is about to run: it may read its
// recording or give it up, so it is waited for.
func (q *queue) onlyMissing() (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.running > 0 || len(q.waiting) == 0 {
		return 0, false
	}
	now := time.Now()
	for _, j := range q.waiting {
		if !j.missing || !j.notBefore.After(now) {
			return 0, false
		}
	}
	return len(q.waiting), true
}
