package ingest

import (
	"context"
	"slices"
	"sync"
	"time"
)

// window is one time window of the search path, [start, end), with its
// position: the key of the page being read and the id of
// the last event of that page already handled.
type window struct {
	start, end time.Time
	cursor     string
	lastID     string
	done       bool
}

// searchPositions is the search path's slice of the state: the
// searchState under keySearch. Window readers running side by side save
// their positions through it; each save is written to the state bucket
// before it returns, and the first unfinished window moves forward over
// the windows finished after it. Safe for concurrent use.
type searchPositions struct {
	st *state

	mu  sync.Mutex
	cur searchState
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
	return p, nil
}

// windowStart is where the first unfinished window starts.
func (p *searchPositions) windowStart() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur.WindowStart
}

// ahead is the number of windows saved ahead of the first unfinished one.
func (p *searchPositions) ahead() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.cur.Ahead)
}

// plan lists the windows of a pass at now, in time order: the first
// unfinished window, the windows saved ahead of it (finished ones
// included, marked done), and windows of size w between and after them
// up to the one that holds now.
func (p *searchPositions) plan(w time.Duration, now time.Time) []window {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []window
	pos := p.cur.WindowStart
	first := true
	add := func(end time.Time) {
		win := window{start: pos, end: end}
		if first {
			win.cursor, win.lastID = p.cur.Cursor, p.cur.LastID
			first = false
		}
		out = append(out, win)
		pos = end
	}
	for _, a := range p.cur.Ahead {
		if a.Start.Before(pos) {
			continue // overlaps a window already planned (cannot happen unless edited)
		}
		for pos.Before(a.Start) {
			add(minTime(pos.Add(w), a.Start))
		}
		first = false
		out = append(out, window{start: a.Start, end: a.End, cursor: a.Cursor, lastID: a.LastID, done: a.Done})
		pos = a.End
	}
	for first || pos.Before(now) {
		add(pos.Add(w))
	}
	return out
}

// save records win's position (done: the window is read to its end) and
// writes the state.
func (p *searchPositions) save(ctx context.Context, win window) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := p.cur
	next.Ahead = slices.Clone(p.cur.Ahead)
	if win.start.Equal(next.WindowStart) {
		next.Cursor, next.LastID = win.cursor, win.lastID
		if win.done {
			next.advance(win.end)
		}
	} else {
		ws := windowState{Start: win.start, End: win.end, Cursor: win.cursor, LastID: win.lastID, Done: win.done}
		i, found := slices.BinarySearchFunc(next.Ahead, win.start, func(a windowState, t time.Time) int { return a.Start.Compare(t) })
		if found {
			next.Ahead[i] = ws
		} else {
			next.Ahead = slices.Insert(next.Ahead, i, ws)
		}
	}
	if err := p.st.put(ctx, keySearch, next); err != nil {
		return err
	}
	p.cur = next
	return nil
}

// advance moves the first unfinished window past a finished one that
// ended at end, and past the finished windows saved after it.
func (s *searchState) advance(end time.Time) {
	s.WindowStart, s.Cursor, s.LastID = end, "", ""
	for len(s.Ahead) > 0 && !s.Ahead[0].Start.After(s.WindowStart) {
		a := s.Ahead[0]
		s.Ahead = s.Ahead[1:]
		if !a.Start.Equal(s.WindowStart) {
			continue
		}
		if !a.Done {
			s.Cursor, s.LastID = a.Cursor, a.LastID
			break
		}
		s.WindowStart = a.End
	}
	if len(s.Ahead) == 0 {
		s.Ahead = nil
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
