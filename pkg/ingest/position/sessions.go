package position

import (
	"context"
	"time"
)

// Recordings is the session recordings' slice of the Store: a Session per
// recording that a session.upload announced, until it is pruned a day
// after its job ended.
type Recordings struct{ st *Store }

// Recordings is the slice of the session recordings.
func (s *Store) Recordings() *Recordings { return &Recordings{st: s} }

// Get is a recording's saved position, and whether there is one.
func (r *Recordings) Get(sid string) (Session, bool, error) {
	var ss Session
	ok, err := r.st.Get(SessionKey(sid), &ss)
	return ss, ok, err
}

// Add saves a position for a recording seen for the first time, at now;
// it reports false (and saves nothing) for one seen before: running, done
// or given up. The give-up clock starts when ingest first sees the
// upload, not at the upload's time: a backfill of old sessions still gets
// its retries.
func (r *Recordings) Add(ctx context.Context, sid string, uploaded, now time.Time) (bool, error) {
	_, ok, err := r.Get(sid)
	if err != nil || ok {
		return false, err
	}
	ss := Session{SessionID: sid, Uploaded: uploaded.UTC(), FirstSeen: now.UTC()}
	return true, r.Save(ctx, ss)
}

// Save saves a recording's position.
func (r *Recordings) Save(ctx context.Context, ss Session) error {
	return r.st.Put(ctx, SessionKey(ss.SessionID), ss)
}

// Unfinished lists the recordings whose job has not ended: those a
// previous run left to resume.
func (r *Recordings) Unfinished() ([]string, error) {
	var sids []string
	for _, k := range r.st.Keys(PrefixSession) {
		var ss Session
		if _, err := r.st.Get(k, &ss); err != nil {
			return nil, err
		}
		if !ss.Ended() {
			sids = append(sids, ss.SessionID)
		}
	}
	return sids, nil
}

// KeepFinished is how long a finished recording's position stays in the
// state. While it is there, reading its session.upload again (a chunk
// resumed after a crash re-reads up to a second of events) does not
// stream the recording twice; after a day the upload event lies far
// behind every saved position, and the entry would only make the state
// grow for good.
const KeepFinished = 24 * time.Hour

// legacyKeep is KeepFinished for entries saved before jobs recorded when
// they finished: counted from when ingest first saw the upload, past the
// missing-recording TTL's default.
const legacyKeep = 7 * 24 * time.Hour

// Prune removes the recordings whose job ended (done or given up) more
// than KeepFinished before now, and returns how many it removed.
func (r *Recordings) Prune(ctx context.Context, now time.Time) (int, error) {
	n := 0
	for _, k := range r.st.Keys(PrefixSession) {
		var ss Session
		if _, err := r.st.Get(k, &ss); err != nil {
			return n, err
		}
		if !ss.Ended() {
			continue
		}
		ended, keep := ss.Finished, KeepFinished
		if ended.IsZero() {
			ended, keep = ss.FirstSeen, legacyKeep
		}
		if now.Sub(ended) < keep {
			continue
		}
		if err := r.st.Purge(ctx, k); err != nil {
			return n, err
		}
		n++
	}
	if n > 0 {
		return n, r.st.ForgetDeleted(ctx)
	}
	return n, nil
}
