package lock

import (
	"slices"
	"time"
)

// maxFailures bounds the failures one counter keeps, so a user under a
// password-guessing storm cannot grow a KV value past JetStream's limits.
const maxFailures = 1000

// counter is the stored state of one user and login: the failed logins
// that may still matter, in event-time order. It lives in the state bucket
// under bus.LockCounterKey, so it survives restarts and is shared by every
// watcher on the bus.
type counter struct {
	// Failures are the failed logins, oldest first. Failures that already
	// led to a lock stay (with Lock set) so a redelivered message is
	// recognised and does not count again.
	Failures []failure `json:"failures"`
	// ResetAt is the time of the latest successful login when
	// reset-on-success is on: failures at or before it do not count.
	ResetAt time.Time `json:"reset_at,omitzero"`
}

// failure is one failed login.
type failure struct {
	// ID is the event id (Teleport-Event-Id): the dedup key.
	ID string `json:"id"`
	// Time is the event's own time, not when it was read.
	Time time.Time `json:"time"`
	// Lock names the lock this failure led to; such a failure never
	// counts towards another lock.
	Lock string `json:"lock,omitempty"`
}

// window is a run of failures that reached the threshold within the period.
type window struct {
	// IDs are the failures in the window, oldest first.
	IDs []string
	// Start and End are the times of the first and last failure.
	Start, End time.Time
}

// add records f in time order and reports whether it is new; a failure
// with an id already present (a redelivered message, or the same event
// published twice) changes nothing.
func (c *counter) add(f failure) bool {
	if slices.ContainsFunc(c.Failures, func(g failure) bool { return g.ID == f.ID }) {
		return false
	}
	i, _ := slices.BinarySearchFunc(c.Failures, f.Time, func(g failure, t time.Time) int {
		if g.Time.After(t) {
			return 1
		}
		return -1 // equal times keep arrival order
	})
	c.Failures = slices.Insert(c.Failures, i, f)
	return true
}

// due finds the earliest window of n failures that count (not locked yet,
// after ResetAt) whose first and last are less than period apart. Events
// are not time-ordered on the bus, so the window need not end at the
// failure just added. ok is false when no window is due.
func (c *counter) due(n int, period time.Duration) (w window, ok bool) {
	var live []failure
	for _, f := range c.Failures {
		if f.Lock == "" && f.Time.After(c.ResetAt) {
			live = append(live, f)
		}
	}
	for i := 0; i+n <= len(live); i++ {
		first, last := live[i], live[i+n-1]
		if last.Time.Sub(first.Time) >= period {
			continue
		}
		w = window{Start: first.Time, End: last.Time}
		for _, f := range live[i : i+n] {
			w.IDs = append(w.IDs, f.ID)
		}
		return w, true
	}
	return window{}, false
}

// locked marks the failures of w as having led to the lock name, and
// reports whether anything changed (false when another watcher or an
// earlier delivery marked them already).
func (c *counter) locked(w window, name string) bool {
	changed := false
	for i := range c.Failures {
		f := &c.Failures[i]
		if f.Lock == "" && slices.Contains(w.IDs, f.ID) {
			f.Lock = name
			changed = true
		}
	}
	return changed
}

// reset makes failures at or before t stop counting (reset-on-success),
// reporting whether anything changed.
func (c *counter) reset(t time.Time) bool {
	if !t.After(c.ResetAt) {
		return false
	}
	c.ResetAt = t
	return true
}

// prune forgets failures older than keep before the newest one, which can
// no longer share a window with new failures, and the oldest beyond
// maxFailures.
func (c *counter) prune(keep time.Duration) {
	if len(c.Failures) == 0 {
		return
	}
	cut := c.Failures[len(c.Failures)-1].Time.Add(-keep)
	i := 0
	for i < len(c.Failures) && c.Failures[i].Time.Before(cut) {
		i++
	}
	i = max(i, len(c.Failures)-maxFailures)
	c.Failures = slices.Delete(c.Failures, 0, i)
}
