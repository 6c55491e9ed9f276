package reader

import (
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// missingRetry are the delays between the tries at a recording that is
// not there yet (upload lag): growing from 1 s to 5 min.
var missingRetry = backoff.Policy{Base: time.Second, Max: 5 * time.Minute}

// DefaultMissingTTL is missing-recording-ttl's default.
const DefaultMissingTTL = 48 * time.Hour

// giveUp is the retry and give-up policy of a recording job: a try that
// failed is made again after a delay growing with the failures in a row,
// until ttl (missing-recording-ttl) after ingest first saw the
// recording's session.upload. The last try is made when the TTL runs out,
// and only a try that began then gives the recording up: a recording that
// exists by its TTL is read, however slow the answers to the earlier
// tries were.
type giveUp struct {
	ttl time.Duration
}

func newGiveUp(ttl time.Duration) giveUp {
	if ttl <= 0 {
		ttl = DefaultMissingTTL
	}
	return giveUp{ttl: ttl}
}

// after decides what becomes of job j whose try began at began and failed
// with err, for a recording first seen at ss.FirstSeen whose position is
// now ss.Next: given up (true), or j updated to be tried again, with the
// delay before that try. A failure is what the server said when the try
// began, and its answer may come late (a slow server, a long stream), so a
// try begun before the TTL ran out gets one more at the TTL, which reads a
// recording that appeared meanwhile.
func (p giveUp) after(j job, ss position.Session, began, now time.Time, err error) (job, time.Duration, bool) {
	deadline := ss.FirstSeen.Add(p.ttl)
	if !began.Before(deadline) {
		return j, 0, true
	}
	// A stream cut after progress starts the backoff over: only failures
	// in a row make the wait grow.
	if ss.Next > j.next {
		j.attempt = 0
	}
	j.next = ss.Next
	// Several tries fit in the TTL however short it is configured.
	d := capBus(min(missingRetry.Delay(uint64(j.attempt)+1), max(p.ttl/4, 100*time.Millisecond)), err)
	j.attempt++
	j.missing = teleport.IsNotFound(err)
	j.notBefore = now.Add(d)
	if j.notBefore.After(deadline) {
		j.notBefore = deadline
	}
	return j, d, false
}
