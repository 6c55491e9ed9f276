package fluentdsim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"hash/maphash"
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
	// JSON is the record as Fluentd keeps it (compact, keys in the order
	// received; over in_http without `time` unless Options.KeepTimeKey);
	// only with
	// Options.KeepRecords.
	JSON json.RawMessage
}

// tagStore is what one tag holds. A bench run stores millions of records,
// so the store holds no pointer per record for the garbage collector to
// trace on every cycle: the ids are packed into one byte slice that records
// point into by offset, and duplicates are found through a map keyed by the
// id's hash (compared in full on a hit, so a hash collision is never taken
// for a duplicate).
type tagStore struct {
	records []storedRecord
	jsons   [][]byte // records[i]'s JSON, with KeepRecords
	// idBytes holds every record's id, back to back.
	idBytes []byte
	// firstByHash maps an id's hash to the first record stored with that id.
	firstByHash map[uint64]int
	// collided holds the ids whose hash an earlier, different id has: they
	// are told apart by their text.
	collided   map[string]struct{}
	hash       func(id string) uint64
	duplicates int64
}

// storedRecord is a Record without its tag and JSON; its id is
// idBytes[idStart:idEnd].
type storedRecord struct {
	unix    int64
	idStart int
	idEnd   int
	size    int
}

// newTagStore returns an empty tagStore hashing ids with hash.
func newTagStore(hash func(id string) uint64) *tagStore {
	return &tagStore{firstByHash: map[uint64]int{}, hash: hash}
}

// newIDHash returns a hash for ids with a random seed.
func newIDHash() func(id string) uint64 {
	seed := maphash.MakeSeed()
	return func(id string) uint64 { return maphash.String(seed, id) }
}

// id is record i's id.
func (ts *tagStore) id(i int) []byte {
	r := ts.records[i]
	return ts.idBytes[r.idStart:r.idEnd]
}

// add appends one record and reports whether its id (when it has one) was
// stored before under this tag.
func (ts *tagStore) add(unix int64, id string, size int) (duplicate bool) {
	i := len(ts.records)
	start := len(ts.idBytes)
	ts.idBytes = append(ts.idBytes, id...)
	ts.records = append(ts.records, storedRecord{unix: unix, idStart: start, idEnd: len(ts.idBytes), size: size})
	if id == "" {
		return false
	}
	h := ts.hash(id)
	first, seen := ts.firstByHash[h]
	switch {
	case !seen:
		ts.firstByHash[h] = i
		return false
	case string(ts.id(first)) == id:
		return true
	}
	if _, ok := ts.collided[id]; ok {
		return true
	}
	if ts.collided == nil {
		ts.collided = map[string]struct{}{}
	}
	ts.collided[id] = struct{}{}
	return false
}

// store keeps the records per tag, in the order they were stored, and
// appends them to the JSONL file.
type store struct {
	keep bool

	mu     sync.Mutex
	idHash func(id string) uint64
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
	st := &store{keep: keep, idHash: newIDHash(), tags: map[string]*tagStore{}, changed: make(chan struct{})}
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

// needJSON reports whether records must be re-encoded as stored.
func (st *store) needJSON() bool { return st.keep || st.jsonl != nil }

// add stores a request's records under one lock, and writes them to the
// JSONL file before returning, so a reader of the file sees every record
// that was answered 2xx.
func (st *store) add(tag string, recs []parsed) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	ts := st.tags[tag]
	if ts == nil {
		ts = newTagStore(st.idHash)
		st.tags[tag] = ts
	}
	for _, r := range recs {
		if ts.add(r.time.Unix(), r.id, r.size) {
			ts.duplicates++
			st.dups++
		}
		if st.keep {
			ts.jsons = append(ts.jsons, r.json)
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
		out[i] = Record{Tag: tag, Time: time.Unix(r.unix, 0).UTC(), ID: string(ts.id(i)), Size: r.size}
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
		for i := range ts.records {
			if id := ts.id(i); len(id) > 0 {
				out[string(id)]++
			}
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
