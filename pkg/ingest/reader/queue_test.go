package reader

import (
	"testing"
	"time"
)

// TestQueueHandsOutDueJobsWithinTheLimit: a job is taken only when it is
// due and a slot is free; the wait given is until the next one is due;
// onlyMissing holds only while every job left waits for a missing
// recording that is not due yet.
func TestQueueHandsOutDueJobsWithinTheLimit(t *testing.T) {
	var size int
	q := newQueue(func(n int) { size = n })
	q.add("a")
	q.add("b")
	if size != 2 || q.idle() {
		t.Fatalf("2 jobs added: size %d, idle %v", size, q.idle())
	}
	j, _, ok := q.take(1)
	if !ok {
		t.Fatal("a due job with a free slot was not taken")
	}
	if _, wait, ok := q.take(1); ok || wait <= 0 {
		t.Fatalf("took a second job over the limit of 1 (wait %s)", wait)
	}
	if _, ok := q.onlyMissing(); ok {
		t.Error("onlyMissing with a job running")
	}
	q.release()
	j.missing, j.notBefore = true, time.Now().Add(time.Hour)
	q.requeue(j)
	other, _, ok := q.take(1)
	if !ok || other.sid == j.sid {
		t.Fatalf("took %q, %v; want the other job, which is due", other.sid, ok)
	}
	q.release()
	q.done(other.sid)
	_, wait, ok := q.take(1)
	if ok || wait < 59*time.Minute {
		t.Fatalf("took a job not due for an hour (%v), or waits only %s", ok, wait)
	}
	if n, ok := q.onlyMissing(); !ok || n != 1 {
		t.Errorf("onlyMissing %d, %v; want the 1 job waiting for its recording", n, ok)
	}
	if size != 1 || q.idle() {
		t.Errorf("size %d, idle %v; want 1 job left", size, q.idle())
	}
	q.release() // as a try of j would
	q.done(j.sid)
	if size != 0 || !q.idle() {
		t.Errorf("size %d, idle %v after every job ended; want 0, idle", size, q.idle())
	}
}
