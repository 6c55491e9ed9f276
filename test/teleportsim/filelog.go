package teleportsim

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apievents "github.com/gravitational/teleport/api/types/events"
)

// SearchMode says how the server answers GetUnstructuredEvents.
type SearchMode int

const (
	// SearchAuto is SearchFileLog for an Older server, SearchIndexed
	// otherwise.
	SearchAuto SearchMode = iota
	// SearchIndexed answers from an index in microseconds, whatever the
	// backlog: a database-backed audit log at its best.
	SearchIndexed
	// SearchFileLog does what Teleport's file audit log does on every
	// call (v13 up to today's file backend): it takes the day files from
	// from−24h to to+24h, JSON-parses every line of them, sorts all the
	// events by time, walks from the first to the page's start key and
	// returns at most limit events and MaxPageBytes of JSON. A page costs
	// O(events in those days), as on the real server.
	SearchFileLog
)

// String names the mode as the --search flag of teleport-sim spells it.
func (m SearchMode) String() string {
	switch m {
	case SearchIndexed:
		return "indexed"
	case SearchFileLog:
		return "file-log"
	default:
		return "auto"
	}
}

// fileLog is the audit log as Teleport's file backend keeps it: per UTC
// day, one JSON line per event in the order they were written. Lines are
// append-only, so a reader may use a prefix without holding the lock.
type fileLog struct {
	mu   sync.RWMutex
	days map[int64]*dayFile

	broken error // the first line that could not be written; searches fail with it

	parsed atomic.Int64 // lines JSON-parsed by searches, for tests and /stats
	calls  atomic.Int64 // searches answered
}

// write appends the line render makes to a day's file; a line that
// cannot be made breaks the log, so searches fail loudly rather than
// miss the event.
func (fl *fileLog) write(day int64, id uint32, render func() ([]byte, error)) {
	line, err := render()
	if err != nil {
		fl.mu.Lock()
		if fl.broken == nil {
			fl.broken = fmt.Errorf("file log: event %d not written: %w", id, err)
		}
		fl.mu.Unlock()
		return
	}
	fl.add(day, id, line)
}

// dayFile is one day's file. ids[i] is the record whose JSON is lines[i]:
// the sim's name for the event, which the real server would not need, as it
// answers with the parsed event itself.
type dayFile struct {
	lines [][]byte
	ids   []uint32
}

// buildFileLog writes every record of st as a JSON line into its day's
// file, rendering on all cores.
func buildFileLog(ctx context.Context, st *store) (*fileLog, error) {
	st.mu.RLock()
	recs := st.recs[:len(st.recs):len(st.recs)]
	st.mu.RUnlock()
	lines, err := renderAll(ctx, recs, st.line)
	if err != nil {
		return nil, fmt.Errorf("write the file log of %d events: %w", len(recs), err)
	}
	fl := &fileLog{days: map[int64]*dayFile{}}
	for id, rec := range recs {
		fl.add(dayOf(rec.t), uint32(id), lines[id])
	}
	return fl, nil
}

// line is a record as the file log stores it: the event's JSON.
func (st *store) line(h hit) ([]byte, error) {
	return lineOf(st.render(h))
}

// lineLocked is line for a caller that holds mu.
func (st *store) lineLocked(h hit) ([]byte, error) {
	var s session
	if h.rec.sess >= 0 {
		s = st.sessions[h.rec.sess]
	}
	return lineOf(st.renderWith(h, s))
}

// lineOf is an event's JSON, as Teleport writes it to the file.
func lineOf(ev apievents.AuditEvent) ([]byte, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("marshal event %s: %w", ev.GetID(), err)
	}
	return b, nil
}

// add appends one line to a day's file.
func (fl *fileLog) add(day int64, id uint32, line []byte) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	f, ok := fl.days[day]
	if !ok {
		f = &dayFile{}
		fl.days[day] = f
	}
	f.lines = append(f.lines, line)
	f.ids = append(f.ids, id)
}

// files returns the lines of the days from from−24h to to+24h, as the
// file log lists its files.
func (fl *fileLog) files(from, to time.Time) ([]dayFile, error) {
	first := from.Add(-24*time.Hour).UnixMilli() / dayMs
	last := to.Add(24*time.Hour).UnixMilli() / dayMs
	fl.mu.RLock()
	defer fl.mu.RUnlock()
	if fl.broken != nil {
		return nil, fl.broken
	}
	var out []dayFile
	for d := first; d <= last; d++ {
		if f, ok := fl.days[d]; ok {
			n := len(f.lines)
			out = append(out, dayFile{lines: f.lines[:n:n], ids: f.ids[:n:n]})
		}
	}
	return out, nil
}

// fileEvent is one parsed line that matched the query.
type fileEvent struct {
	t    int64 // unix milliseconds
	id   uint32
	size int
}

// search answers a query the file log's way and returns the page's
// records, cut at q.limit events and MaxPageBytes of JSON (a page holds
// at least one event), and whether the page is full (so a LastKey is due).
func (fl *fileLog) search(ctx context.Context, st *store, q query) ([]hit, bool, error) {
	kt, kid, err := decodeKey(q.startKey)
	if err != nil {
		return nil, false, err
	}
	fl.calls.Add(1)
	from, to := q.from.UnixMilli(), q.to.UnixMilli()
	if q.from.After(time.UnixMilli(from)) {
		from++ // the event times are whole milliseconds
	}
	files, err := fl.files(q.from, q.to)
	if err != nil {
		return nil, false, err
	}
	var all []fileEvent
	for _, f := range files {
		for i, line := range f.lines {
			// Teleport reads on after its caller has gone; the double stops,
			// so a killed client does not leave it busy for the next one.
			if i%1024 == 0 && ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			var fields map[string]any
			if err := json.Unmarshal(line, &fields); err != nil {
				return nil, false, fmt.Errorf("parse file log line: %w", err)
			}
			fl.parsed.Add(1)
			typ, _ := fields["event"].(string)
			ts, _ := fields["time"].(string)
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				return nil, false, fmt.Errorf("parse file log line: time %q: %w", ts, err)
			}
			ms := at.UnixMilli()
			if ms < from || ms > to || len(q.types) > 0 && !q.types[typ] {
				continue
			}
			all = append(all, fileEvent{t: ms, id: f.ids[i], size: len(line)})
		}
	}
	cmpEvents := func(a, b fileEvent) int { return cmp.Or(cmp.Compare(a.t, b.t), cmp.Compare(a.id, b.id)) }
	slices.SortFunc(all, cmpEvents)
	if q.desc {
		slices.Reverse(all)
	}
	i := 0
	if q.startKey != "" {
		key := fileEvent{t: kt, id: kid}
		for i < len(all) && (!q.desc && cmpEvents(all[i], key) <= 0 || q.desc && cmpEvents(all[i], key) >= 0) {
			i++
		}
	}
	var out []hit
	size := 0
	st.mu.RLock()
	defer st.mu.RUnlock()
	for ; i < len(all) && len(out) < q.limit; i++ {
		if len(out) > 0 && size+all[i].size > MaxPageBytes {
			return out, true, nil
		}
		out = append(out, hit{all[i].id, st.recs[all[i].id]})
		size += all[i].size
	}
	return out, len(out) == q.limit, nil
}
