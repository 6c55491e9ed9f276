package position

import (
	"strconv"
	"strings"
	"testing"
)

func TestTrackerSavesOnlyAcknowledgedPrefix(t *testing.T) {
	tr := NewTracker("start")
	a := tr.Published("a")
	b := tr.Published("b")
	tr.Skipped("c")
	if pos, _, _, err := tr.Position(); err != nil || pos != "start" {
		t.Fatalf("before any ack: %q, %v", pos, err)
	}
	a(nil)
	if pos, _, _, err := tr.Position(); err != nil || pos != "a" {
		t.Fatalf("after a: %q, %v", pos, err)
	}
	b(nil) // c was skipped after b: it is covered too
	if pos, _, _, err := tr.Position(); err != nil || pos != "c" {
		t.Fatalf("after b: %q, %v", pos, err)
	}
	d := tr.Published("d")
	e := tr.Published("e")
	d(ErrBus)
	e(nil)
	if pos, _, _, err := tr.Position(); pos != "c" || err == nil {
		t.Fatalf("after a failed publish: %q, %v; want c and the error", pos, err)
	}
}

// TestTrackerFloor: the floor saved with a position is the stream's
// highest acknowledged sequence when the oldest event after the position
// was published, so every event after the position that reached the
// stream is stored above it; with nothing outstanding it is the current
// one, and a failed publish keeps its own.
func TestTrackerFloor(t *testing.T) {
	acked := uint64(100)
	tr := NewTracker("start").WithFloor(func() uint64 { return acked }, nil)
	if _, f, _, _ := tr.Position(); f != 100 {
		t.Fatalf("nothing published: floor %d, want 100 (the stream now)", f)
	}
	a := tr.Published("a") // floor 100: stored after 100 if at all
	acked = 150            // other publishers' messages were acknowledged
	b := tr.Published("b") // floor 150
	acked = 160
	c := tr.Published("c") // floor 160
	if pos, f, _, _ := tr.Position(); pos != "start" || f != 100 {
		t.Fatalf("a, b, c outstanding: %q floor %d, want start and 100", pos, f)
	}
	a(nil)
	if pos, f, _, _ := tr.Position(); pos != "a" || f != 150 {
		t.Fatalf("after a: %q floor %d, want a and 150 (b's)", pos, f)
	}
	b(ErrBus)
	acked = 300
	c(nil) // after the failure: the position and the floor stay at b
	if pos, f, _, err := tr.Position(); pos != "a" || f != 150 || err == nil {
		t.Fatalf("b failed: %q floor %d err %v, want a, 150 and the error", pos, f, err)
	}

	ok := NewTracker("start").WithFloor(func() uint64 { return acked }, nil)
	d := ok.Published("d")
	acked = 400
	d(nil)
	if pos, f, _, _ := ok.Position(); pos != "d" || f != 400 {
		t.Fatalf("all acknowledged: %q floor %d, want d and 400 (the stream now)", pos, f)
	}
}

// TestTrackerCommitPoints: the safe position and the events on the bus it
// covers, after sequences of publishes (pN), their results (aN: acknowledged,
// xN: failed), events filtered out (sN) and events found on the bus (oN), N
// being the position.
func TestTrackerCommitPoints(t *testing.T) {
	for _, c := range []struct {
		ops    string
		safe   int
		events int64
		failed bool
	}{
		{ops: "", safe: 0},
		{ops: "p1 p2 a1", safe: 1, events: 1},
		{ops: "p1 p2 a1 a2", safe: 2, events: 2},
		{ops: "s1 s2", safe: 2},
		{ops: "o1 o2 p3 a3", safe: 3, events: 3},
		{ops: "p1 o2 o3 a1", safe: 3, events: 3},
		{ops: "p1 o2 p3 a1", safe: 1, events: 1},
		{ops: "p1 o2 p3 a1 a3", safe: 3, events: 3},
		{ops: "p1 s2 p3 o4 a1 a3", safe: 4, events: 3},
		{ops: "p1 p2 x1 a2", safe: 0, failed: true},
		{ops: "p1 p2 a1 x2 o3", safe: 1, events: 1, failed: true},
	} {
		t.Run(c.ops, func(t *testing.T) {
			tr := NewTracker(0)
			done := map[int]func(error){}
			for _, op := range strings.Fields(c.ops) {
				n, err := strconv.Atoi(op[1:])
				if err != nil {
					t.Fatal(err)
				}
				switch op[0] {
				case 'p':
					done[n] = tr.Published(n)
				case 'a':
					done[n](nil)
				case 'x':
					done[n](ErrBus)
				case 's':
					tr.Skipped(n)
				case 'o':
					tr.FoundOnBus(n)
				}
			}
			safe, _, _, events, err := tr.CommitPoint()
			if safe != c.safe || events != c.events || (err != nil) != c.failed {
				t.Errorf("safe %d covering %d events (error %v); want %d covering %d (failed %v)", safe, events, err, c.safe, c.events, c.failed)
			}
			if _, _, _, again, _ := tr.CommitPoint(); again != 0 {
				t.Errorf("a second commit point counts %d events again", again)
			}
		})
	}
}
