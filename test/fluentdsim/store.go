package fluentdsim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Record is one stored record.
type Record struct {
	Tag string
	// Time is the record's `time` (seconds precision, as the format has no
	// fraction), or the receive time when it had none.
	Time time.Time
	// ID is the duplicate-detection key: `uid`, or "<sid>/<ei>" for session
	// events; "" when the record has neither.
	ID string
	// Size is the length of the record's JSON as received.
	Size int
	// JSON is the record without `time` (compact, keys in the order
	// received); only with
	// Options.KeepRecords.
	JSON json.RawMessage
}

// tagStore is what one tag holds, compactly: a bench run stores millions
// of records.
type tagStore struct {
	records    []storedRecord
	jsons      [][]byte // records[i]'s JSON, with KeepRecords
	ids        map[string]int
	duplicates int64
}

// storedRecord is a Record without its tag and JSON.
type storedRecord struct {
	unix int64
	id   string
	size int
}

// store keeps the records per tag, in the order they were stored, and
// appends them to the JSONL file.
type store struct {
	keep bool

	mu     sync.Mutex
	tags   map[string]*tagStore
	total  int64
	dups   int64
	jsonl  *os.File
	w      *bufio.Writer
	closed bool
	// changed is closed and replaced whenever records are stored, to wake
	// WaitStored.
	changed chan struct{}
}

func newStore(keep bool, jsonlPath string) (*store, error) {
	st := &store{keep: keep, tags: map[string]*tagStore{}, changed: make(chan struct{})}
	if jsonlPath != "" {
		f, err := os.OpenFile(jsonlPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open JSONL file %q: %w", jsonlPath, err)
		}
		st.jsonl = f
		st.w = bufio.NewWriterSize(f, 64<<10)
	}
	return st, nil
}

// needJSON reports whether records must be re-encoded without `time`.
func (st *store) needJSON() bool { return st.keep || st.jsonl != nil }

// add stores a request's records under one lock, and writes them to the
// JSONL file before returning, so a reader of the file sees every record
// that was answered 2xx.
func (st *store) add(tag string, recs []parsed) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	ts := st.tags[tag]
	if ts == nil {
		ts = &tagStore{ids: map[string]int{}}
		st.tags[tag] = ts
	}
	for _, r := range recs {
		ts.records = append(ts.records, storedRecord{unix: r.time.Unix(), id: r.id, size: r.size})
		if st.keep {
			ts.jsons = append(ts.jsons, r.json)
		}
		if r.id != "" {
			if ts.ids[r.id] > 0 {
				ts.duplicates++
				st.dups++
			}
			ts.ids[r.id]++
		}
	}
	st.total += int64(len(recs))
	close(st.changed)
	st.changed = make(chan struct{})
	if st.w == nil || st.closed {
		return nil
	}
	return st.writeJSONL(tag, recs)
}

func (st *store) writeJSONL(tag string, recs []parsed) error {
	tagJSON, err := json.Marshal(tag)
	if err != nil {
		return fmt.Errorf("encode tag: %w", err)
	}
	for _, r := range recs {
		st.w.WriteString(`{"tag":`)
		st.w.Write(tagJSON)
		st.w.WriteString(`,"time":"`)
		st.w.WriteString(r.time.UTC().Format(time.RFC3339))
		st.w.WriteString(`","record":`)
		st.w.Write(r.json)
		st.w.WriteString("}\n")
	}
	if err := st.w.Flush(); err != nil {
		return fmt.Errorf("write JSONL file %q: %w", st.jsonl.Name(), err)
	}
	return nil
}

// records returns a copy of what a tag holds.
func (st *store) records(tag string) []Record {
	st.mu.Lock()
	defer st.mu.Unlock()
	ts := st.tags[tag]
	if ts == nil {
		return nil
	}
	out := make([]Record, len(ts.records))
	for i, r := range ts.records {
		out[i] = Record{Tag: tag, Time: time.Unix(r.unix, 0).UTC(), ID: r.id, Size: r.size}
		if i < len(ts.jsons) {
			out[i].JSON = ts.jsons[i]
		}
	}
	return out
}

// ids returns id → times stored, for one tag or (tag "") for all tags.
func (st *store) ids(tag string) map[string]int {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := map[string]int{}
	for t, ts := range st.tags {
		if tag != "" && t != tag {
			continue
		}
		for id, n := range ts.ids {
			out[id] += n
		}
	}
	return out
}

// fill copies the per-tag counts into s.
func (st *store) fill(s *Stats) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s.Stored = make(map[string]int64, len(st.tags))
	s.Duplicates = make(map[string]int64, len(st.tags))
	for t, ts := range st.tags {
		s.Stored[t] = int64(len(ts.records))
		if ts.duplicates > 0 {
			s.Duplicates[t] = ts.duplicates
		}
	}
	s.StoredTotal = st.total
	s.DuplicatesTotal = st.dups
}

// wait returns the stored total and a channel closed at the next change.
func (st *store) wait() (int64, <-chan struct{}) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.total, st.changed
}

// reset forgets every stored record; the JSONL file is left as it is.
func (st *store) reset() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.tags = map[string]*tagStore{}
	st.total, st.dups = 0, 0
	close(st.changed)
	st.changed = make(chan struct{})
}

func (st *store) close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.jsonl == nil {
		st.closed = true
		return nil
	}
	st.closed = true
	flushErr := st.w.Flush()
	if err := st.jsonl.Close(); err != nil {
		return fmt.Errorf("close JSONL file %q: %w", st.jsonl.Name(), err)
	}
	if flushErr != nil {
		return fmt.Errorf("write JSONL file %q: %w", st.jsonl.Name(), flushErr)
	}
	return nil
}
