package reader

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// Sessions streams the session recordings that session.upload events
// announce to session.<sid>: one job per recording, at most limit at once
// (Run), each resuming from the index saved in its position. A job whose
// recording is not there yet waits, without holding a slot, as giveUp
// says. The pieces: the queue of jobs (queue.go), the policy (giveup.go)
// and the streaming of one recording (recording.go).
type Sessions struct {
	q      *queue
	policy giveUp
	rec    *recorder
	pos    *position.Recordings
	m      SessionMetrics
	log    zerolog.Logger
}

// SessionOptions configure Sessions.
type SessionOptions struct {
	// SkipTypes are the recording event types not published
	// (skip-session-types).
	SkipTypes []string
	// MissingTTL is how long after ingest first saw a recording's upload
	// it is tried (missing-recording-ttl; DefaultMissingTTL if 0).
	MissingTTL time.Duration
	Metrics    SessionMetrics
	Log        zerolog.Logger
}

// SessionMetrics are the series Sessions keeps (any may be nil).
type SessionMetrics struct {
	// Pending is the number of jobs not finished.
	Pending prometheus.Gauge
	// Finished counts the jobs ended, by result: done, gave_up.
	Finished *prometheus.CounterVec
	// Missing counts the recordings given up while not found.
	Missing prometheus.Counter
}

// NewSessions streams recordings from src to out, with their positions in
// pos and the session stream's tail (nil in a dry run).
func NewSessions(src RecordingSource, out Outlet, pos *position.Recordings, tail *position.Tail, o SessionOptions) *Sessions {
	s := &Sessions{
		policy: newGiveUp(o.MissingTTL),
		rec:    &recorder{src: src, out: out, pos: pos, tail: tail, skip: o.SkipTypes, log: o.Log},
		pos:    pos,
		m:      o.Metrics,
		log:    o.Log,
	}
	s.q = newQueue(func(n int) {
		if s.m.Pending != nil {
			s.m.Pending.Set(float64(n))
		}
	})
	return s
}

// Add registers a session.upload's recording: saved in the state (if new)
// before the upload event's position can be, then queued.
func (s *Sessions) Add(ctx context.Context, sid string, uploaded time.Time) error {
	added, err := s.pos.Add(ctx, sid, uploaded, time.Now())
	if err != nil || !added {
		return err
	}
	s.q.add(sid)
	return nil
}

// Resume queues the jobs a previous run left unfinished.
func (s *Sessions) Resume() error {
	sids, err := s.pos.Unfinished()
	for _, sid := range sids {
		s.q.add(sid)
	}
	return err
}

// Idle reports whether no job is queued or running.
func (s *Sessions) Idle() bool { return s.q.idle() }

// OnlyMissing reports how many jobs are left when every one of them waits
// for a recording that was not there and its next try is not due yet (0
// and false otherwise).
func (s *Sessions) OnlyMissing() (int, bool) { return s.q.onlyMissing() }

// Run starts jobs as they become due, at most limit at once (4 if not
// positive), until ctx ends. A job's error is retried; Run returns only
// ctx's error, once the running jobs have returned.
func (s *Sessions) Run(ctx context.Context, limit int) error {
	if limit <= 0 {
		limit = 4
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		j, wait, ok := s.q.take(limit)
		if ok {
			wg.Go(func() {
				began := time.Now()
				s.finish(ctx, j, began, s.rec.stream(ctx, j.sid))
			})
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-s.q.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// finish books the end of a job's try that began at began: done, retried
// later, or given up (see giveUp).
func (s *Sessions) finish(ctx context.Context, j job, began time.Time, err error) {
	s.q.release()
	if err == nil {
		s.ended(j.sid, "done")
		return
	}
	if ctx.Err() != nil {
		return
	}
	log := s.log.With().Str("sid", j.sid).Logger()
	ss, _, gerr := s.pos.Get(j.sid)
	if gerr != nil {
		log.Error().Err(gerr).Msg("session job state unreadable")
	}
	ss.SessionID = j.sid
	next, d, gaveUp := s.policy.after(j, ss, began, time.Now(), err)
	if gaveUp {
		s.giveUp(ctx, log, j.sid, ss, err)
		return
	}
	if next.missing || NoRoom(err) {
		log.Debug().Err(err).Dur("retry_in", d).Msg("session recording not available yet, or no room on the bus")
	} else {
		log.Warn().Err(err).Dur("retry_in", d).Msg("session recording stream failed, will retry")
	}
	s.q.requeue(next)
}

// giveUp saves a recording as given up, for err.
func (s *Sessions) giveUp(ctx context.Context, log zerolog.Logger, sid string, ss position.Session, err error) {
	ss.GaveUp, ss.Reason, ss.Finished = true, err.Error(), time.Now().UTC()
	if perr := s.pos.Save(ctx, ss); perr != nil {
		log.Error().Err(perr).Msg("saving a given-up session job failed; it will be tried again on restart")
	}
	if teleport.IsNotFound(err) && s.m.Missing != nil {
		s.m.Missing.Inc()
	}
	log.Warn().Err(err).Dur("ttl", s.policy.ttl).Msg("session recording given up")
	s.ended(sid, "gave_up")
}

// ended forgets a finished job.
func (s *Sessions) ended(sid, result string) {
	s.q.done(sid)
	if s.m.Finished != nil {
		s.m.Finished.WithLabelValues(result).Inc()
	}
}
