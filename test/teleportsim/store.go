package teleportsim

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const dayMs = int64(24 * time.Hour / time.Millisecond)

// kind is the generator's compact name for an audit event's type and shape.
type kind uint8

const (
	kindLoginOK kind = iota
	kindLoginFail
	kindDBQuery
	kindKube
	kindRoleCreated
	kindAccessRequest
	kindSessionStart
	kindSessionEnd
	kindSessionUpload
	numKinds
)

var kindTypes = [numKinds]string{
	kindLoginOK:       "user.login",
	kindLoginFail:     "user.login",
	kindDBQuery:       "db.session.query",
	kindKube:          "kube.request",
	kindRoleCreated:   "role.created",
	kindAccessRequest: "access_request.create",
	kindSessionStart:  "session.start",
	kindSessionEnd:    "session.end",
	kindSessionUpload: "session.upload",
}

// kindWeights is the mix of audit events that are not part of a session,
// in percent.
var kindWeights = []struct {
	k kind
	w int
}{
	{kindLoginOK, 30}, {kindLoginFail, 10}, {kindDBQuery, 20},
	{kindKube, 25}, {kindRoleCreated, 5}, {kindAccessRequest, 10},
}

func pickKind(r *rand.Rand) kind {
	n := r.IntN(100)
	for _, kw := range kindWeights {
		if n < kw.w {
			return kw.k
		}
		n -= kw.w
	}
	return kindLoginOK
}

// record is one audit event in compact form; everything else about the
// event is derived from the seed and the record's id when it is rendered.
type record struct {
	t     int64 // unix milliseconds, UTC
	sess  int32 // session number, -1 when the event belongs to none
	chunk uint16
	kind  kind
	huge  bool
}

// session is one recorded session in compact form.
type session struct {
	start, end, upload int64 // unix milliseconds
	startRec, endRec   uint32
	middle             int // print and resize events between start and leave
	huge               bool
	missing            bool
}

// events in a recording: start, middle events, leave, end.
func (s session) length() int { return s.middle + 3 }

// types counts a recording's events by type, as recording renders them:
// every eighth middle event is a resize, the others are prints.
func (s session) types() map[string]int {
	resize := (s.middle + 7) / 8
	out := map[string]int{"session.start": 1, "session.leave": 1, "session.end": 1}
	if resize > 0 {
		out["resize"] = resize
	}
	if prints := s.middle - resize; prints > 0 {
		out["print"] = prints
	}
	return out
}

// dateChunks holds the export chunks of one UTC date.
type dateChunks struct {
	ids    []string   // chunk id by chunk number
	events [][]uint32 // record ids by chunk number, in time order
	sealed []bool     // listed by GetEventExportChunks
	open   int        // the live chunk still collecting events, -1 if none
	opened int64      // when open was created, unix ms
}

// store holds the simulated audit log. All methods are safe for concurrent
// use; records are append-only so ids stay valid.
type store struct {
	seed    uint64
	cluster string
	k       int // chunks per date

	mu       sync.RWMutex
	recs     []record
	order    []uint32 // record ids sorted by (time, id)
	sessions []session
	sids     map[string]int32
	dates    map[int64]*dateChunks
	counts   [numKinds]int
	rng      *rand.Rand // for live events and stragglers

	enc encodings // has its own lock

	// files is the file log searches read in SearchFileLog mode (nil
	// otherwise); set before serving, it has its own lock.
	files *fileLog
}

func newRand(seed uint64, stream ...uint64) *rand.Rand {
	s2 := uint64(0x9e3779b97f4a7c15)
	for _, v := range stream {
		s2 = (s2 ^ v) * 0xbf58476d1ce4e5b9
		s2 ^= s2 >> 31
	}
	return rand.New(rand.NewPCG(seed, s2))
}

// generate builds the backfill described by o (which has its defaults).
func generate(o Options) *store {
	seed := uint64(o.Seed)
	st := &store{
		seed:    seed,
		cluster: o.ClusterName,
		k:       o.ChunksPerDate,
		sids:    make(map[string]int32),
		dates:   make(map[int64]*dateChunks),
		rng:     newRand(seed, 0x11fe),
	}
	r := newRand(seed, 0xbac4)
	from, to := o.From.UnixMilli(), o.To.UnixMilli()
	span := max(to-from, 1)

	recs := make([]record, 0, o.Events)
	hugePrints := o.HugeEvents / 2
	if o.Sessions == 0 {
		hugePrints = 0
	}
	for s := 0; s < o.Sessions; s++ {
		d := 1000 + r.Int64N(max(min(30*60*1000, span/20), 1))
		up := 500 + r.Int64N(30_000)
		if d+up >= span {
			d, up = span/4, span/4
		}
		start := from + r.Int64N(max(span-d-up, 1))
		ss := session{start: start, end: start + d, upload: start + d + up, middle: 3 + r.IntN(38)}
		ss.missing = r.Float64() < o.MissingRecordingRate
		st.addSession(ss)
		n := int32(s)
		recs = append(recs,
			record{t: ss.start, sess: n, kind: kindSessionStart},
			record{t: ss.end, sess: n, kind: kindSessionEnd},
			record{t: ss.upload, sess: n, kind: kindSessionUpload})
	}
	for _, s := range r.Perm(len(st.sessions))[:min(hugePrints, len(st.sessions))] {
		st.sessions[s].huge = true
	}
	firstPlain := len(recs)
	for len(recs) < o.Events {
		recs = append(recs, record{t: from + r.Int64N(span), sess: -1, kind: pickKind(r)})
	}
	plain := len(recs) - firstPlain
	for _, i := range r.Perm(plain)[:min(o.HugeEvents-hugePrints, plain)] {
		recs[firstPlain+i].kind = kindDBQuery
		recs[firstPlain+i].huge = true
	}
	slices.SortStableFunc(recs, func(a, b record) int { return cmp.Compare(a.t, b.t) })

	st.recs = recs
	st.order = make([]uint32, len(recs))
	for id := range recs {
		st.order[id] = uint32(id)
		st.noteSessionRecord(uint32(id))
		st.counts[recs[id].kind]++
	}
	st.assignChunks()
	return st
}

// addSession registers a session; the caller holds mu or owns st.
func (st *store) addSession(ss session) int32 {
	n := int32(len(st.sessions))
	st.sessions = append(st.sessions, ss)
	st.sids[st.sessionID(n)] = n
	return n
}

// noteSessionRecord links a session to its start and end records.
func (st *store) noteSessionRecord(id uint32) {
	rec := st.recs[id]
	switch rec.kind {
	case kindSessionStart:
		st.sessions[rec.sess].startRec = id
	case kindSessionEnd:
		st.sessions[rec.sess].endRec = id
	}
}

// assignChunks splits each date's backfill events over k chunks plus one
// chunk holding a single event.
func (st *store) assignChunks() {
	for i := 0; i < len(st.recs); {
		day := st.recs[i].t / dayMs
		j := i
		for j < len(st.recs) && st.recs[j].t/dayMs == day {
			j++
		}
		r := newRand(st.seed, 0xc4c4, uint64(day))
		single := i + r.IntN(j-i)
		dc := st.date(day)
		for n := 0; n <= st.k; n++ {
			dc.newChunk(st.chunkID(day, n), true)
		}
		for id := i; id < j; id++ {
			c := r.IntN(st.k)
			if id == single && j-i > 1 {
				c = st.k
			}
			st.recs[id].chunk = uint16(c)
			dc.events[c] = append(dc.events[c], uint32(id))
		}
		i = j
	}
}

func (st *store) date(day int64) *dateChunks {
	dc, ok := st.dates[day]
	if !ok {
		dc = &dateChunks{open: -1}
		st.dates[day] = dc
	}
	return dc
}

func (dc *dateChunks) newChunk(id string, sealed bool) int {
	dc.ids = append(dc.ids, id)
	dc.events = append(dc.events, nil)
	dc.sealed = append(dc.sealed, sealed)
	return len(dc.ids) - 1
}

// chunkID is the opaque name of chunk n of a date.
func (st *store) chunkID(day int64, n int) string {
	r := newRand(st.seed, 0xc1d, uint64(day), uint64(n))
	return fmt.Sprintf("%016x%04x", r.Uint64(), n)
}

// sessionID is the sid of session n.
func (st *store) sessionID(n int32) string {
	return uuidFrom(newRand(st.seed, 0x51d, uint64(n)))
}

// eventUID is the uid of audit record id.
func (st *store) eventUID(id uint32) string {
	return uuidFrom(newRand(st.seed, 0x01d, uint64(id)))
}

func uuidFrom(r *rand.Rand) string {
	a, b := r.Uint64(), r.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x",
		a>>32, (a>>16)&0xffff, a&0xfff, 0x8000|(b>>48)&0x3fff, b&0xffffffffffff)
}

// insert adds a record to the log and its chunk; the caller holds mu.
func (st *store) insert(rec record, dc *dateChunks, chunk int) uint32 {
	id := uint32(len(st.recs))
	rec.chunk = uint16(chunk)
	st.recs = append(st.recs, rec)
	pos := sort.Search(len(st.order), func(i int) bool { return st.recs[st.order[i]].t > rec.t })
	st.order = slices.Insert(st.order, pos, id)
	dc.events[chunk] = append(dc.events[chunk], id)
	st.counts[rec.kind]++
	st.noteSessionRecord(id)
	if st.files != nil {
		st.files.write(dayOf(rec.t), id, func() ([]byte, error) { return st.lineLocked(hit{id, rec}) })
	}
	return id
}

// dayOf is the UTC day number of a unix-millisecond time.
func dayOf(ms int64) int64 { return ms / dayMs }

// appendLive adds n events at now, into the open live chunk of their date,
// and seals live chunks older than age. One event in 20 starts a session
// (its start, end and upload events).
func (st *store) appendLive(now time.Time, n int, age time.Duration, missingRate float64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	ms := now.UnixMilli()
	st.sealLive(ms, age)
	for i := 0; i < n; i++ {
		if st.rng.IntN(20) != 0 {
			st.insertLive(record{t: ms, sess: -1, kind: pickKind(st.rng)}, ms)
			continue
		}
		ss := session{start: ms - 2000, end: ms - 1000, upload: ms, middle: 3 + st.rng.IntN(20)}
		ss.missing = st.rng.Float64() < missingRate
		s := st.addSession(ss)
		st.insertLive(record{t: ss.start, sess: s, kind: kindSessionStart}, ms)
		st.insertLive(record{t: ss.end, sess: s, kind: kindSessionEnd}, ms)
		st.insertLive(record{t: ss.upload, sess: s, kind: kindSessionUpload}, ms)
	}
}

func (st *store) insertLive(rec record, now int64) {
	day := rec.t / dayMs
	dc := st.date(day)
	if dc.open < 0 {
		dc.open = dc.newChunk(st.chunkID(day, len(dc.ids)), false)
		dc.opened = now
	}
	st.insert(rec, dc, dc.open)
}

// sealLive lists the live chunks that have collected events for age.
func (st *store) sealLive(now int64, age time.Duration) {
	for _, dc := range st.dates {
		if dc.open >= 0 && now-dc.opened >= age.Milliseconds() {
			dc.sealed[dc.open] = true
			dc.open = -1
		}
	}
}

// addStraggler adds a sealed chunk of n events to a date, with times in that
// date but not after now, and returns the chunk's id.
func (st *store) addStraggler(date time.Time, n int, now time.Time) (string, error) {
	if n < 1 {
		return "", fmt.Errorf("add straggler chunk: %d events, want at least 1", n)
	}
	day := date.UTC().UnixMilli() / dayMs
	start := day * dayMs
	end := min(start+dayMs, now.UnixMilli()+1)
	if end <= start {
		return "", fmt.Errorf("add straggler chunk: date %s is in the future", date.UTC().Format(time.DateOnly))
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	dc := st.date(day)
	c := dc.newChunk(st.chunkID(day, len(dc.ids)), true)
	for i := 0; i < n; i++ {
		st.insert(record{t: start + st.rng.Int64N(end-start), sess: -1, kind: pickKind(st.rng)}, dc, c)
	}
	return dc.ids[c], nil
}

// query selects audit events for a search.
type query struct {
	from, to time.Time
	types    map[string]bool
	limit    int
	desc     bool
	startKey string
}

// hit is a record picked by a search.
type hit struct {
	id  uint32
	rec record
}

// search returns up to q.limit records in order from after q.startKey.
func (st *store) search(q query) ([]hit, error) {
	kt, kid, err := decodeKey(q.startKey)
	if err != nil {
		return nil, err
	}
	from, to := q.from.UnixMilli(), q.to.UnixMilli()
	if q.from.After(time.UnixMilli(from)) {
		from++ // the event times are whole milliseconds
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	less := func(i int, t int64, id uint32) bool { // order[i] < (t, id)
		r := st.recs[st.order[i]]
		return r.t < t || r.t == t && st.order[i] < id
	}
	var out []hit
	take := func(i int) bool {
		id := st.order[i]
		r := st.recs[id]
		if len(q.types) == 0 || q.types[kindTypes[r.kind]] {
			out = append(out, hit{id, r})
		}
		return len(out) < q.limit
	}
	if !q.desc {
		i := sort.Search(len(st.order), func(i int) bool { return !less(i, from, 0) })
		if q.startKey != "" {
			i = sort.Search(len(st.order), func(i int) bool { return !less(i, kt, kid+1) })
		}
		for ; i < len(st.order) && st.recs[st.order[i]].t <= to; i++ {
			if st.recs[st.order[i]].t >= from && !take(i) {
				break
			}
		}
		return out, nil
	}
	i := sort.Search(len(st.order), func(i int) bool { return st.recs[st.order[i]].t > to }) - 1
	if q.startKey != "" {
		i = sort.Search(len(st.order), func(i int) bool { return !less(i, kt, kid) }) - 1
	}
	for ; i >= 0 && st.recs[st.order[i]].t >= from; i-- {
		if st.recs[st.order[i]].t <= to && !take(i) {
			break
		}
	}
	return out, nil
}

// encodeKey makes the opaque LastKey that resumes after a record.
func encodeKey(h hit) string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("k1:%d:%d", h.rec.t, h.id)))
}

var errBadKey = errors.New("invalid start key")

func decodeKey(key string) (int64, uint32, error) {
	if key == "" {
		return 0, 0, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil {
		return 0, 0, fmt.Errorf("%w %q", errBadKey, key)
	}
	parts := strings.Split(string(raw), ":")
	if len(parts) != 3 || parts[0] != "k1" {
		return 0, 0, fmt.Errorf("%w %q", errBadKey, key)
	}
	t, err1 := strconv.ParseInt(parts[1], 10, 64)
	id, err2 := strconv.ParseUint(parts[2], 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%w %q", errBadKey, key)
	}
	return t, uint32(id), nil
}

// chunks lists the sealed chunk ids of a date.
func (st *store) chunks(date time.Time) []string {
	st.mu.RLock()
	defer st.mu.RUnlock()
	dc := st.dates[date.UTC().UnixMilli()/dayMs]
	if dc == nil {
		return nil
	}
	var out []string
	for n, id := range dc.ids {
		if dc.sealed[n] && len(dc.events[n]) > 0 {
			out = append(out, id)
		}
	}
	return out
}

// chunkEvents returns the records of a sealed chunk.
func (st *store) chunkEvents(date time.Time, chunk string) ([]hit, bool) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	dc := st.dates[date.UTC().UnixMilli()/dayMs]
	if dc == nil {
		return nil, false
	}
	n := slices.Index(dc.ids, chunk)
	if n < 0 || !dc.sealed[n] {
		return nil, false
	}
	out := make([]hit, len(dc.events[n]))
	for i, id := range dc.events[n] {
		out[i] = hit{id, st.recs[id]}
	}
	return out, true
}

// sessionByID finds a session by its sid.
func (st *store) sessionByID(sid string) (int32, session, bool) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	n, ok := st.sids[sid]
	if !ok {
		return 0, session{}, false
	}
	return n, st.sessions[n], true
}

func (st *store) session(n int32) session {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.sessions[n]
}
