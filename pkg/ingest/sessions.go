package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// Session job retry delays: a recording that is not there yet (upload lag)
// is asked for again with a delay growing from 1 s to 5 min, until
// missing-recording-ttl (defaultTTL unless configured) after ingest first
// saw its session.upload. The last try is made when the TTL runs out, and
// only a try that began then gives the recording up: a recording that
// exists by its TTL is read, however slow the answers to the earlier
// tries were.
var missingRetry = backoff.Policy{Base: time.Second, Max: 5 * time.Minute}

const defaultTTL = 48 * time.Hour

// sessions streams session recordings to session.<sid>: one job per
// session.upload, at most session-concurrency at once, each resuming from
// the index saved in the state. A job whose recording is missing waits
// without holding a slot.
type sessions struct {
	in *ingester

	mu      sync.Mutex
	queue   []job           // waiting, in no particular order
	known   map[string]bool // queued or running
	running int
	wake    chan struct{} // signalled when the queue changes

	structured atomic.Bool // the server lacks StreamUnstructuredSessionEvents
}

// job is a recording to stream once notBefore has passed.
type job struct {
	sid       string
	notBefore time.Time
	attempt   int
	missing   bool  // the last attempt found no recording
	next      int64 // the saved next index when the last attempt failed
}

func newSessions(in *ingester) *sessions {
	return &sessions{in: in, known: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// add registers a session.upload's recording: saved in the state (if new)
// before the upload event's position can be, then queued.
func (s *sessions) add(ctx context.Context, sid string, uploaded time.Time) error {
	key := sessionKey(sid)
	var ss sessionState
	ok, err := s.in.st.get(key, &ss)
	if err != nil {
		return err
	}
	if ok {
		return nil // seen before: running, done or given up
	}
	// The give-up clock starts when ingest first sees the upload, not at
	// the upload's time: a backfill of old sessions still gets retries.
	ss = sessionState{SessionID: sid, Uploaded: uploaded.UTC(), FirstSeen: time.Now().UTC()}
	if err := s.in.st.put(ctx, key, ss); err != nil {
		return err
	}
	s.enqueue(job{sid: sid})
	return nil
}

// resume queues the jobs a previous run left unfinished.
func (s *sessions) resume() error {
	for _, k := range s.in.st.keys(prefixSess) {
		var ss sessionState
		if _, err := s.in.st.get(k, &ss); err != nil {
			return err
		}
		if !ss.Done && !ss.GaveUp {
			s.enqueue(job{sid: ss.SessionID})
		}
	}
	return nil
}

func (s *sessions) enqueue(j job) {
	s.mu.Lock()
	s.queue = append(s.queue, j)
	s.known[j.sid] = true
	s.in.m.sessionsRunning.Set(float64(len(s.known)))
	s.mu.Unlock()
	s.signal()
}

func (s *sessions) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// idle reports whether no job is queued or running.
func (s *sessions) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.known) == 0
}

// onlyMissing reports how many jobs are left when every one of them is
// waiting for a recording that was not there and its next try is not due
// yet (0 and false otherwise). A due job is about to run: it may read its
// recording or give it up, so it is waited for.
func (s *sessions) onlyMissing() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running > 0 || len(s.queue) == 0 {
		return 0, false
	}
	now := time.Now()
	for _, j := range s.queue {
		if !j.missing || !j.notBefore.After(now) {
			return 0, false
		}
	}
	return len(s.queue), true
}

// run starts jobs as they become due, at most limit at once, until ctx
// ends. A job's error is retried; run returns only ctx's error.
func (s *sessions) run(ctx context.Context, limit int) error {
	if limit <= 0 {
		limit = 4
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		j, wait, ok := s.next(limit)
		if ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				began := time.Now()
				s.finish(ctx, j, began, s.stream(ctx, j.sid))
			}()
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// next takes the next due job if a slot is free; otherwise it says how
// long to wait at most.
func (s *sessions) next(limit int) (job, time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wait := time.Hour
	if s.running >= limit {
		return job{}, wait, false
	}
	now := time.Now()
	best := -1
	for i, j := range s.queue {
		if d := j.notBefore.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		best = i
		break
	}
	if best < 0 {
		return job{}, wait, false
	}
	j := s.queue[best]
	s.queue = slices.Delete(s.queue, best, best+1)
	s.running++
	return j, 0, true
}

// finish books the end of a job's try that began at began: done, retried
// later, or given up. Only a try that began once the missing-recording TTL
// had run out gives up: a failure is what the server said when the try
// began, and its answer may come late (a slow server, a long stream), so
// a try begun earlier gets one more at the TTL, which reads a recording
// that appeared meanwhile.
func (s *sessions) finish(ctx context.Context, j job, began time.Time, err error) {
	defer s.signal()
	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	if err == nil {
		s.forget(j.sid, "done")
		return
	}
	if ctx.Err() != nil {
		return
	}
	log := s.in.log.With().Str("sid", j.sid).Logger()
	var ss sessionState
	if _, gerr := s.in.st.get(sessionKey(j.sid), &ss); gerr != nil {
		log.Error().Err(gerr).Msg("session job state unreadable")
	}
	ttl := s.in.cfg.Ingest.MissingRecordingTTL
	if ttl <= 0 {
		ttl = defaultTTL
	}
	missing := teleport.IsNotFound(err)
	deadline := ss.FirstSeen.Add(ttl)
	if !began.Before(deadline) {
		ss.GaveUp, ss.Reason, ss.Finished = true, err.Error(), time.Now().UTC()
		if perr := s.in.st.put(ctx, sessionKey(j.sid), ss); perr != nil {
			log.Error().Err(perr).Msg("saving a given-up session job failed; it will be tried again on restart")
		}
		if missing {
			s.in.m.missing.Inc()
		}
		log.Warn().Err(err).Dur("ttl", ttl).Msg("session recording given up")
		s.forget(j.sid, "gave_up")
		return
	}
	// A stream cut after progress starts the backoff over: only failures
	// in a row make the wait grow.
	if ss.Next > j.next {
		j.attempt = 0
	}
	j.next = ss.Next
	// Several tries fit in the TTL however short it is configured.
	b := min(missingRetry.Delay(uint64(j.attempt)+1), max(ttl/4, 100*time.Millisecond))
	if errors.Is(err, errBus) && !noRoom(err) {
		b = min(b, busRetryMax)
	}
	if missing || noRoom(err) {
		log.Debug().Err(err).Dur("retry_in", b).Msg("session recording not available yet, or no room on the bus")
	} else {
		log.Warn().Err(err).Dur("retry_in", b).Msg("session recording stream failed, will retry")
	}
	j.attempt++
	j.missing = missing
	j.notBefore = time.Now().Add(b)
	if j.notBefore.After(deadline) {
		j.notBefore = deadline
	}
	s.mu.Lock()
	s.queue = append(s.queue, j)
	s.mu.Unlock()
}

// keepFinished is how long a finished session job stays in the state. While
// it is there, reading its session.upload again (a chunk resumed after a
// crash re-reads up to a second of events) does not stream the recording
// twice; after a day the upload event lies far behind every saved
// position, and the entry would only make the state grow for good.
const keepFinished = 24 * time.Hour

// legacyKeep is keepFinished for entries saved before jobs recorded when
// they finished: counted from when ingest first saw the upload, past the
// missing-recording TTL's default.
const legacyKeep = 7 * 24 * time.Hour

// pruneSessions removes the session jobs that finished (done or given up)
// more than keepFinished before now, and returns how many it removed.
func pruneSessions(ctx context.Context, st *state, now time.Time) (int, error) {
	n := 0
	for _, k := range st.keys(prefixSess) {
		var ss sessionState
		if _, err := st.get(k, &ss); err != nil {
			return n, err
		}
		if !ss.Done && !ss.GaveUp {
			continue
		}
		ended, keep := ss.Finished, keepFinished
		if ended.IsZero() {
			ended, keep = ss.FirstSeen, legacyKeep
		}
		if now.Sub(ended) < keep {
			continue
		}
		if err := st.purge(ctx, k); err != nil {
			return n, err
		}
		n++
	}
	if n > 0 {
		return n, st.forgetDeleted(ctx)
	}
	return n, nil
}

// forget drops a finished job.
func (s *sessions) forget(sid, result string) {
	s.mu.Lock()
	delete(s.known, sid)
	s.in.m.sessionsRunning.Set(float64(len(s.known)))
	s.mu.Unlock()
	s.in.m.sessionJobs.WithLabelValues(result).Inc()
}

// stream publishes one recording from its saved index to its end, saving
// the index as PubAcks arrive.
func (s *sessions) stream(ctx context.Context, sid string) error {
	in := s.in
	key := sessionKey(sid)
	var ss sessionState
	if _, err := in.st.get(key, &ss); err != nil {
		return err
	}
	if ss.Done || ss.GaveUp {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, errc := s.open(ctx, sid, ss.Next)
	seen, err := in.out.resumeSet(ctx, true, ss.Floor, ss.Next > 0 || ss.Events > 0)
	if err != nil {
		return err
	}
	tr := newTracker(ss.Next).withFloor(in.out.floorFunc(true), seen)
	if err := saveFloor(ctx, in, key, &ss, &ss.Floor, tr); err != nil {
		return err
	}
	commit := func(ctx context.Context, done bool) error {
		next, floor, moved, events, err := tr.commitPoint()
		if err != nil {
			return err
		}
		ss.Events += events
		if !moved && !done {
			return nil
		}
		ss.Next, ss.Done, ss.Floor = next, done, &floor
		if done {
			ss.Finished = time.Now().UTC()
		}
		return in.st.put(ctx, key, ss)
	}
	last := time.Now()
	for {
		var u *auditlogpb.EventUnstructured
		var ok bool
		select {
		case u, ok = <-events:
		case err := <-errc:
			// Only this recording's publishes are waited for: the audit
			// readers may keep the publisher busy for long, and this
			// try's answer must be booked while it is fresh.
			if serr := tr.settled(ctx); serr != nil {
				return serr
			}
			if cerr := commit(ctx, false); cerr != nil {
				return cerr
			}
			if teleport.IsNotImplemented(err) && !s.structured.Load() {
				s.structured.Store(true)
				in.log.Warn().Msg("server lacks StreamUnstructuredSessionEvents (Teleport older than v17): reading recordings with StreamSessionEvents")
				return s.stream(ctx, sid)
			}
			return fmt.Errorf("stream session %s from index %d: %w", sid, ss.Next, err)
		}
		if !ok {
			break
		}
		if err := tr.failed(); err != nil {
			return err
		}
		if err := s.publish(ctx, sid, ss.Next, u, tr); err != nil {
			return err
		}
		if time.Since(last) >= commitEvery {
			last = time.Now()
			if err := commit(ctx, false); err != nil {
				return err
			}
		}
	}
	if err := tr.settled(ctx); err != nil {
		return err
	}
	return commit(ctx, true)
}

// publish sends one recording event unless its type is skipped.
func (s *sessions) publish(ctx context.Context, sid string, from int64, u *auditlogpb.EventUnstructured, tr *tracker[int64]) error {
	idx := u.GetIndex()
	if idx < from {
		return nil // before the saved index: a server that ignored it
	}
	e, err := toSessionEvent(sid, u)
	if err != nil {
		return err
	}
	if slices.Contains(s.in.cfg.SkipSessionTypes, e.Type) {
		tr.skipped(idx + 1)
		return nil
	}
	if s.in.out.onBus(e) || tr.onBus(e.MsgID()) {
		tr.foundOnBus(idx + 1)
		return nil
	}
	return s.in.out.send(ctx, e, tr.published(idx+1))
}

// open starts reading a recording, through the structured call once the
// server has said it lacks the unstructured one.
func (s *sessions) open(ctx context.Context, sid string, from int64) (chan *auditlogpb.EventUnstructured, chan error) {
	if s.structured.Load() {
		return s.in.src.StreamSessionEvents(ctx, sid, from)
	}
	return s.in.src.StreamUnstructuredSessionEvents(ctx, sid, from)
}
