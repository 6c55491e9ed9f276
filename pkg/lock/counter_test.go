package lock

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func ids(w window) string { return fmt.Sprint(w.IDs) }

func TestCounterDedupAndOrder(t *testing.T) {
	var c counter
	for _, f := range []failure{{ID: "c", Time: at(30)}, {ID: "a", Time: at(10)}, {ID: "b", Time: at(20)}} {
		if !c.add(f) {
			t.Fatalf("add %s: reported as already present", f.ID)
		}
	}
	if c.add(failure{ID: "b", Time: at(20)}) {
		t.Error("the same event id added twice")
	}
	got := make([]string, 0, len(c.Failures))
	for _, f := range c.Failures {
		got = append(got, f.ID)
	}
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("failures in order %v, want [a b c] (event time order)", got)
	}
}

func TestCounterWindow(t *testing.T) {
	tests := []struct {
		name  string
		times []int // seconds after t0, in arrival order
		want  string
	}{
		{"three within a minute", []int{0, 20, 50}, "[f0 f1 f2]"},
		{"two only", []int{0, 20}, ""},
		{"spread over more than the period", []int{0, 45, 90, 135}, ""},
		{"exactly the period apart does not count", []int{0, 30, 60}, ""},
		{"late arrival, still spread out", []int{0, 90, 45}, ""},
		{"late arrival in the middle", []int{0, 50, 30}, "[f0 f2 f1]"},
		{"sliding: the later three", []int{0, 70, 80, 90}, "[f1 f2 f3]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c counter
			for i, s := range tt.times {
				c.add(failure{ID: fmt.Sprint("f", i), Time: at(s)})
			}
			w, ok := c.due(3, time.Minute)
			got := ""
			if ok {
				got = ids(w)
			}
			if got != tt.want {
				t.Errorf("due window %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCounterLockedFailuresDoNotCountAgain(t *testing.T) {
	var c counter
	for i := range 4 {
		c.add(failure{ID: fmt.Sprint("f", i), Time: at(i)})
	}
	w, ok := c.due(3, time.Minute)
	if !ok {
		t.Fatal("no window after 4 failures in 4 seconds")
	}
	if !c.locked(w, "lock-1") {
		t.Fatal("marking the window changed nothing")
	}
	if c.locked(w, "lock-1") {
		t.Error("marking the same window twice changed the counter again")
	}
	if w2, ok := c.due(3, time.Minute); ok {
		t.Errorf("window %s due again after the lock; the 4th failure alone must not lock", ids(w2))
	}
	c.add(failure{ID: "f4", Time: at(5)})
	c.add(failure{ID: "f5", Time: at(6)})
	w2, ok := c.due(3, time.Minute)
	if !ok || ids(w2) != "[f3 f4 f5]" {
		t.Errorf("after three more failures: window %v (%v), want [f3 f4 f5]", w2.IDs, ok)
	}
}

func TestCounterReset(t *testing.T) {
	var c counter
	c.add(failure{ID: "f0", Time: at(0)})
	c.add(failure{ID: "f1", Time: at(10)})
	if !c.reset(at(15)) {
		t.Fatal("reset changed nothing")
	}
	if c.reset(at(12)) {
		t.Error("an earlier success moved the reset back")
	}
	c.add(failure{ID: "f2", Time: at(20)})
	if w, ok := c.due(3, time.Minute); ok {
		t.Errorf("window %s due although a success came after the first two failures", ids(w))
	}
	c.add(failure{ID: "f3", Time: at(25)})
	c.add(failure{ID: "f4", Time: at(30)})
	if w, ok := c.due(3, time.Minute); !ok || ids(w) != "[f2 f3 f4]" {
		t.Errorf("window %v (%v) after three failures past the success, want [f2 f3 f4]", w.IDs, ok)
	}
}

func TestCounterPrune(t *testing.T) {
	var c counter
	for i := range 5 {
		c.add(failure{ID: fmt.Sprint("f", i), Time: at(i * 60)})
	}
	c.prune(2 * time.Minute)
	if len(c.Failures) != 3 || c.Failures[0].ID != "f2" {
		t.Errorf("after pruning to 2 minutes before the newest: %v, want f2..f4", c.Failures)
	}
	var big counter
	for i := range maxFailures + 10 {
		big.add(failure{ID: fmt.Sprint("g", i), Time: at(0).Add(time.Duration(i) * time.Millisecond)})
	}
	big.prune(time.Hour)
	if len(big.Failures) != maxFailures || big.Failures[0].ID != "g10" {
		t.Errorf("after pruning a storm: %d failures starting at %s, want %d starting at g10", len(big.Failures), big.Failures[0].ID, maxFailures)
	}
}

func TestLockNameDeterministic(t *testing.T) {
	w := window{IDs: []string{"a", "b", "c"}, Start: at(0), End: at(10)}
	n1, n2 := lockName("alice", "root", w), lockName("alice", "root", w)
	if n1 != n2 {
		t.Errorf("same window gave names %q and %q", n1, n2)
	}
	for _, other := range []string{lockName("alice", "", w), lockName("bob", "root", w),
		lockName("alice", "root", window{IDs: []string{"d"}, Start: at(1)})} {
		if other == n1 {
			t.Errorf("a different user, login or window shares the lock name %q", n1)
		}
	}
}
