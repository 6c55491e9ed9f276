package ingest

import (
	"context"
	"sync"
	"time"
)

// window is one time window of the search path, [start, end), with its
// position: the key of the page being read and the id of the last event
// of that page already handled.
type window struct {
	start, end time.Time
	cursor     string
	lastID     string
	done       bool
	// floor is the saved position's (see tracker; nil: none saved yet),
	// seen the events found on the bus after it when the read started.
	floor *uint64
	seen  map[string]struct{}
}

// searchPositions is the search path's slice of the state: the
// searchState under keySearch. The window reader saves its position
// through it; each save is written to the state bucket before it returns.
type searchPositions struct {
	st *state

	mu    sync.Mutex
	cur   searchState
	saved bool // cur is in the state bucket
}

// loadSearchPositions reads the saved position; without one, the search
// starts at start (and at the page key cursor, from --cursor).
func loadSearchPositions(st *state, start time.Time, cursor string) (*searchPositions, error) {
	p := &searchPositions{st: st}
	ok, err := st.get(keySearch, &p.cur)
	if err != nil {
		return nil, err
	}
	if !ok {
		p.cur = searchState{WindowStart: start, Cursor: cursor}
	}
	p.saved = ok
	return p, nil
}

// windowStart is where the first unfinished window starts.
func (p *searchPositions) windowStart() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur.WindowStart
}

// next is the window to read at now: the first unfinished one, of size
// w, at its saved position.
func (p *searchPositions) next(w time.Duration) window {
	p.mu.Lock()
	defer p.mu.Unlock()
	return window{start: p.cur.WindowStart, end: p.cur.WindowStart.Add(w), cursor: p.cur.Cursor, lastID: p.cur.LastID, floor: p.cur.Floor}
}

// isSaved reports whether a position was saved: a reader may have
// published from it.
func (p *searchPositions) isSaved() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.saved
}

// save records the position in the first unfinished window (done: it is
// read to its end, and the next one starts) and writes the state.
func (p *searchPositions) save(ctx context.Context, win window) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := searchState{WindowStart: win.start, Cursor: win.cursor, LastID: win.lastID, Floor: win.floor}
	if win.done {
		next = searchState{WindowStart: win.end, Floor: win.floor}
	}
	if err := p.st.put(ctx, keySearch, next); err != nil {
		return err
	}
	p.cur, p.saved = next, true
	return nil
}
