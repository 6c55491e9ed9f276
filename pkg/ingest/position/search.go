package position

import (
	"context"
	"sync"
	"time"
)

// Window is one time window of the search path, [Start, End), with its
// position: the key of the page being read and the id of the last event
// of that page already handled. Floor is the saved position's (see
// Tracker; nil: none saved yet).
type Window struct {
	Start, End time.Time
	Cursor     string
	LastID     string
	// Done: the window is read to its end, and the next one starts.
	Done  bool
	Floor *uint64
}

// Paging is the search path's slice of the Store: the Search position.
// Each Save is written to the state bucket before it returns.
type Paging struct {
	st *Store

	mu    sync.Mutex
	cur   Search
	saved bool // cur is in the state bucket
}

// Paging reads the search path's saved position; without one, the search
// starts at start (and at the page key cursor, from --cursor).
func (s *Store) Paging(start time.Time, cursor string) (*Paging, error) {
	p := &Paging{st: s}
	ok, err := s.Get(KeySearch, &p.cur)
	if err != nil {
		return nil, err
	}
	if !ok {
		p.cur = Search{WindowStart: start, Cursor: cursor}
	}
	p.saved = ok
	return p, nil
}

// WindowStart is where the first unfinished window starts.
func (p *Paging) WindowStart() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur.WindowStart
}

// Next is the window to read: the first unfinished one, of size w, at its
// saved position.
func (p *Paging) Next(w time.Duration) Window {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Window{Start: p.cur.WindowStart, End: p.cur.WindowStart.Add(w), Cursor: p.cur.Cursor, LastID: p.cur.LastID, Floor: p.cur.Floor}
}

// Saved reports whether a position was saved: a reader may have published
// from it.
func (p *Paging) Saved() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.saved
}

// Save records the position in the first unfinished window (or, Done,
// that the next one starts) and writes the state.
func (p *Paging) Save(ctx context.Context, win Window) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := Search{WindowStart: win.Start, Cursor: win.Cursor, LastID: win.LastID, Floor: win.Floor}
	if win.Done {
		next = Search{WindowStart: win.End, Floor: win.Floor}
	}
	if err := p.st.Put(ctx, KeySearch, next); err != nil {
		return err
	}
	p.cur, p.saved = next, true
	return nil
}
