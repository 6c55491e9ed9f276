package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
)

// ErrStreamLost is wrapped by the error Run returns when a stream that
// ingest's saved positions depend on is missing, was recreated, or holds
// less than the positions account for: the events behind those positions
// may be gone from the bus, and only `ingest recover` makes them come back.
var ErrStreamLost = errors.New("stream lost")

// guardEvery is how often the leader compares the streams with its marks
// while it runs (besides at the start of every pass).
const guardEvery = 5 * time.Second

// streamMark is what the positions know about one stream: which stream
// (its creation time) and how far it got (the highest sequence ingest saw
// acknowledged in it). It is saved before every position it covers.
type streamMark struct {
	Stream  string    `json:"stream"`
	Created time.Time `json:"created"`
	Seq     uint64    `json:"seq"`
}

// streamLostError says what happened to a stream and how to recover.
type streamLostError struct {
	what    string
	recover string
}

func (e *streamLostError) Error() string {
	return e.what + ": the events behind ingest's saved positions are not all on the bus any more; " +
		"ingest stopped; stop every ingest and run: " + e.recover
}

func (e *streamLostError) Is(target error) bool { return target == ErrStreamLost }

// recoverCommand is the command line that recovers with this configuration.
func recoverCommand(cfgFile string) string {
	if cfgFile == "" {
		return "ingest recover (with the flags and environment of this ingest)"
	}
	return "ingest --config " + cfgFile + " recover"
}

// streamLookup returns a stream's info; an error wrapping
// jetstream.ErrStreamNotFound means there is none.
type streamLookup func(ctx context.Context, name string) (*jetstream.StreamInfo, error)

// compare checks one stream against its mark (nil: no mark, but
// positions exist when hasPositions) and returns a streamLostError when
// the stream is missing, was recreated, or is shorter than acked. Other
// lookup errors are returned as they are.
func compare(ctx context.Context, look streamLookup, name string, mark *streamMark, acked uint64, hasPositions bool, cfgFile string) error {
	info, err := look(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		switch {
		case mark != nil && (mark.Seq > 0 || acked > 0 || hasPositions):
			return &streamLostError{recover: recoverCommand(cfgFile), what: fmt.Sprintf(
				"stream %q is missing, but ingest's saved positions say it held events (up to sequence %d)", name, max(mark.Seq, acked))}
		case hasPositions:
			return &streamLostError{recover: recoverCommand(cfgFile), what: fmt.Sprintf(
				"stream %q is missing, but ingest's saved positions say it held events", name)}
		}
		return nil
	}
	if err != nil {
		return err
	}
	if mark == nil {
		return nil
	}
	if !info.Created.Equal(mark.Created) {
		return &streamLostError{recover: recoverCommand(cfgFile), what: fmt.Sprintf(
			"stream %q was recreated since ingest saved its positions (it was created %s; the positions belong to the stream created %s)",
			name, info.Created.UTC().Format(time.RFC3339Nano), mark.Created.UTC().Format(time.RFC3339Nano))}
	}
	if seq := max(mark.Seq, acked); info.State.LastSeq < seq {
		return &streamLostError{recover: recoverCommand(cfgFile), what: fmt.Sprintf(
			"stream %q holds fewer messages than ingest's saved positions account for (its last sequence is %d; ingest saw %d acknowledged)",
			name, info.State.LastSeq, seq)}
	}
	return nil
}

// guardedStreams are the streams ingest publishes to: audit and sessions.
func guardedStreams(cfg config.NATSConfig) []string {
	return []string{cfg.AuditStream, cfg.SessionStream}
}

// hasPositions reports whether the state holds positions that stand for
// events published to stream (audit: export and search positions;
// sessions: a recording with progress).
func hasPositions(st *position.Store, stream string, cfg config.NATSConfig) (bool, error) {
	if stream == cfg.AuditStream {
		for _, p := range []string{position.PrefixChunk, position.PrefixDate, position.KeySearch} {
			if len(st.Keys(p)) > 0 {
				return true, nil
			}
		}
		return false, nil
	}
	for _, k := range st.Keys(position.PrefixSession) {
		var ss position.Session
		if _, err := st.Get(k, &ss); err != nil {
			return false, err
		}
		if ss.Next > 0 || ss.Events > 0 {
			return true, nil
		}
	}
	return false, nil
}

// checkStreams compares every stream ingest publishes to with the marks
// and positions in st, before anything could create a stream anew.
func checkStreams(ctx context.Context, look streamLookup, st *position.Store, cfg config.NATSConfig, cfgFile string) error {
	for _, name := range guardedStreams(cfg) {
		var m streamMark
		ok, err := st.Get(bus.StreamMarkKey(name), &m)
		if err != nil {
			return err
		}
		pos, err := hasPositions(st, name, cfg)
		if err != nil {
			return err
		}
		var mark *streamMark
		if ok {
			mark = &m
		}
		if err := compare(ctx, look, name, mark, 0, pos, cfgFile); err != nil {
			return err
		}
	}
	return nil
}

// adoptStreams records a mark for every stream that has none yet (a first
// run, a run after `ingest recover`, or state from a version without
// marks): the stream as it is now, with no sequence claimed. A mark that
// another process wrote meanwhile is kept.
func adoptStreams(ctx context.Context, look streamLookup, kv jetstream.KeyValue, st *position.Store, cfg config.NATSConfig, log zerolog.Logger) error {
	for _, name := range guardedStreams(cfg) {
		key := bus.StreamMarkKey(name)
		var m streamMark
		if ok, err := st.Get(key, &m); err != nil || ok {
			return err
		}
		info, err := look(ctx, name)
		if err != nil {
			return fmt.Errorf("record stream %q in the state: %w", name, err)
		}
		m = streamMark{Stream: name, Created: info.Created.UTC()}
		raw, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode state %q: %w", key, err)
		}
		if _, err := kv.Create(ctx, key, raw); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: record stream %q in the state: %w", position.ErrBus, name, err)
		}
		log.Debug().Str("stream", name).Time("created", m.Created).Msg("positions now belong to this stream")
	}
	return nil
}

// guard keeps the marks of a running leader: it learns the highest
// acknowledged sequence of each stream from the PubAcks, saves it before
// any position that covers it, and compares the streams with it (every
// guardEvery, at every pass, and when a PubAck's sequence goes backwards).
// The first mismatch ends the run: see lost.
type guard struct {
	look    streamLookup
	st      *position.Store
	cfgFile string
	log     zerolog.Logger

	// store reports the embedded server's store write error ("" while
	// none; nil with an external server), storage its directory.
	store   func() string
	storage string

	persistMu sync.Mutex // one save at a time

	mu    sync.Mutex
	marks map[string]*guarded // by stream name

	lostOnce sync.Once
	lostCh   chan struct{}
	lostErr  error
}

// guarded is one stream's mark as saved, and what the PubAcks say since.
type guarded struct {
	saved   streamMark
	acked   uint64 // highest sequence acknowledged, ≥ saved.Seq
	suspect bool   // a PubAck went backwards: compare before saving
}

// newGuard loads the marks of the streams ingest publishes to from st,
// recording one for a stream that has none yet.
func newGuard(ctx context.Context, look streamLookup, st *position.Store, cfg config.NATSConfig, cfgFile string, log zerolog.Logger) (*guard, error) {
	g := &guard{look: look, st: st, cfgFile: cfgFile, log: log, marks: map[string]*guarded{}, lostCh: make(chan struct{})}
	for _, name := range guardedStreams(cfg) {
		var m streamMark
		ok, err := st.Get(bus.StreamMarkKey(name), &m)
		if err != nil {
			return nil, err
		}
		if !ok {
			info, err := look(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("record stream %q in the state: %w", name, err)
			}
			m = streamMark{Stream: name, Created: info.Created.UTC()}
			if err := st.Put(ctx, bus.StreamMarkKey(name), m); err != nil {
				return nil, err
			}
		}
		g.marks[name] = &guarded{saved: m, acked: m.Seq}
	}
	return g, nil
}

// acked records a PubAck. A new message (not a duplicate) whose sequence
// is not above the saved mark means the stream may have started over:
// the next save compares first.
func (g *guard) acked(ack *jetstream.PubAck) {
	if g == nil || ack == nil || ack.Duplicate {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.marks[ack.Stream]
	if !ok {
		return
	}
	if ack.Sequence <= m.saved.Seq {
		m.suspect = true
	}
	m.acked = max(m.acked, ack.Sequence)
}

// persist saves the marks that PubAcks have moved; the state calls it
// before saving any position. A suspect stream is compared first, and a
// mismatch is returned (and ends the run) instead of saving.
func (g *guard) persist(ctx context.Context) error {
	if g == nil {
		return nil
	}
	if err := g.err(); err != nil {
		return err
	}
	g.persistMu.Lock()
	defer g.persistMu.Unlock()
	g.mu.Lock()
	var due []streamMark
	suspect := false
	for _, m := range g.marks {
		if m.acked > m.saved.Seq {
			next := m.saved
			next.Seq = m.acked
			due = append(due, next)
		}
		suspect = suspect || m.suspect
	}
	g.mu.Unlock()
	if suspect {
		if err := g.check(ctx); err != nil {
			return err
		}
	}
	for _, m := range due {
		if err := g.st.Put(ctx, bus.StreamMarkKey(m.Stream), m); err != nil {
			return err
		}
		g.mu.Lock()
		g.marks[m.Stream].saved = m
		g.marks[m.Stream].suspect = false
		g.mu.Unlock()
	}
	return nil
}

// check compares every stream with its mark. A mismatch is returned and
// ends the run; a stream that cannot be looked up now (NATS unreachable)
// is not a mismatch and is looked at again next time.
func (g *guard) check(ctx context.Context) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	type item struct {
		name  string
		mark  streamMark
		acked uint64
	}
	var items []item
	for name, m := range g.marks {
		items = append(items, item{name, m.saved, m.acked})
	}
	g.mu.Unlock()
	for _, it := range items {
		err := compare(ctx, g.look, it.name, &it.mark, it.acked, false, g.cfgFile)
		if errors.Is(err, ErrStreamLost) {
			g.fail(err)
			return err
		}
		if err != nil {
			g.log.Debug().Err(err).Str("stream", it.name).Msg("stream not checked this time")
			continue
		}
		g.mu.Lock()
		g.marks[it.name].suspect = false
		g.mu.Unlock()
	}
	return nil
}

// watch checks the streams every guardEvery until ctx ends or a mismatch
// is found, which it returns.
func (g *guard) watch(ctx context.Context) error {
	t := time.NewTicker(guardEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-g.lostCh:
			return g.lostErr
		case <-t.C:
			if err := g.checkStore(); err != nil {
				return err
			}
			if err := g.check(ctx); err != nil {
				return err
			}
		}
	}
}

// ErrStoreFailed is wrapped by the error Run returns when the embedded
// server could not write its store (a full or failing disk).
var ErrStoreFailed = errors.New("the JetStream store cannot be written")

// checkStore ends the run when the embedded server reported a store write
// error: nats-server stores nothing more in that stream until it restarts,
// even once the disk has room again, so waiting would never end. The
// positions stay where the last PubAck put them.
func (g *guard) checkStore() error {
	if g.store == nil {
		return nil
	}
	msg := g.store()
	if msg == "" {
		return nil
	}
	return fmt.Errorf("%w: storage directory %q (%s): ingest stopped with its positions where they were, nothing unacknowledged counts as done; "+
		"free space there and start ingest again (a supervisor that restarts it resumes once there is room)", ErrStoreFailed, g.storage, msg)
}

// fail records the first mismatch and wakes watch.
func (g *guard) fail(err error) {
	g.lostOnce.Do(func() {
		g.lostErr = err
		close(g.lostCh)
	})
}

// err is the mismatch found, if any.
func (g *guard) err() error {
	select {
	case <-g.lostCh:
		return g.lostErr
	default:
		return nil
	}
}
