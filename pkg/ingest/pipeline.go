package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/reader"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// pipeline is one reading run: the readers of Teleport, the outlet they
// publish through, and what watches them. Its passes are in passes.go.
type pipeline struct {
	cfg      *config.Config
	log      zerolog.Logger
	src      teleport.AuditLog
	st       *position.Store
	out      *outlet
	m        *metrics
	prog     *progress
	start    time.Time
	sessions *reader.Sessions
	export   *reader.Exporter
	search   *reader.Searcher
	pruned   time.Time // when finished session jobs were last pruned
	// guard checks the streams against the saved positions, skip holds
	// the events a recovery finds on the bus, loss counts messages removed
	// unacknowledged (all nil in a dry run).
	guard *guard
	skip  *skipSet
	loss  *lossWatcher
}

// read connects to Teleport and runs the pipeline over the bus until ctx
// ends or, with exit-on-last-event, until everything is delivered; gate
// is the lease's (see lease.gate), waited on before every publish.
func (s *store) read(ctx context.Context, gate func(context.Context) error) error {
	cfg, log, b := s.cfg, s.log, s.bus
	src, err := teleport.Connect(ctx, cfg.Teleport, log)
	if err != nil {
		return err
	}
	defer src.Close()
	// Reading again: a "caught up" from an earlier run no longer holds.
	if err := bus.ClearCaughtUp(ctx, s.kv); err != nil {
		return err
	}
	p, closePub, err := s.newPipeline(ctx, readerSource(cfg, src), gate)
	if err != nil {
		return err
	}
	defer closePub()
	err = runWithLock(ctx, cfg, log, b, src, s.m, p.run)
	if ctx.Err() != nil {
		// Stopped (SIGTERM, or the lease lost): say what the next run
		// resumes from. Only positions whose events were acknowledged
		// are ever saved.
		log.Info().Dict("saved", p.st.Saved()).Int64("events", p.prog.events.Load()).
			Msg("stopped reading; positions saved in the state bucket")
		return err
	}
	if err != nil || !cfg.ExitOnLastEvent {
		return err
	}
	// Caught up with everything acknowledged (p.run drained the outlet).
	return finish(ctx, cfg, log, b, s.kv)
}

// newPipeline builds the pipeline over the bus: the positions, the guard
// that saves the stream marks before them, the publisher, a recovery's
// skip set, the outlet and the readers. closePub waits (10 s at most) for
// the last PubAcks.
func (s *store) newPipeline(ctx context.Context, src teleport.AuditLog, gate func(context.Context) error) (p *pipeline, closePub func(), err error) {
	cfg, log, b := s.cfg, s.log, s.bus
	st, err := position.Open(ctx, s.kv, b.Cfg.StateBucket)
	if err != nil {
		return nil, nil, err
	}
	g, err := newGuard(ctx, b.StreamInfo, st, b.Cfg, cfg.File, log)
	if err != nil {
		return nil, nil, err
	}
	if b.Embedded != nil {
		g.store, g.storage = b.Embedded.StoreError, b.Embedded.StoreDir()
	}
	st.BeforeSave(g.persist)
	last, err := lastSequences(ctx, b)
	if err != nil {
		return nil, nil, err
	}
	pub := bus.NewPublisher(b.JS, cfg.Ingest.MaxInFlight, bus.WithPublisherLog(log),
		bus.WithTailCheck(streamOfSubject(b.Cfg), last), bus.WithAckTimeout(publishAckTimeout), bus.WithPace(s.m.memory.pace()),
		bus.WithWaitObserver(s.m.observePublishWait))
	closeIt := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = pub.Close(cctx)
	}
	defer func() {
		if err != nil {
			closeIt()
		}
	}()
	skip, err := loadRecovery(ctx, b, st, log)
	if err != nil {
		return nil, nil, err
	}
	out := &outlet{pub: pub, limit: messageLimit(b), m: s.m, log: log, guard: g, skip: skip, storage: embeddedStorage(b), gate: gate}
	tails := tails{
		audit:    position.NewTail(b.JS, pub, b.Cfg.AuditStream, log),
		sessions: position.NewTail(b.JS, pub, b.Cfg.SessionStream, log),
	}
	p, err = build(ctx, cfg, log, src, st, out, tails, s.m)
	if err != nil {
		return nil, nil, err
	}
	p.guard, p.skip = g, skip
	p.loss = &lossWatcher{streams: guardedStreams(b.Cfg), stream: b.StreamInfo, consumers: b.ConsumerInfos, m: s.m, log: log}
	return p, closeIt, nil
}

// tails are the streams' tails the readers resume against (nil in a dry
// run).
type tails struct {
	audit, sessions *position.Tail
}

// build fixes the start time and builds the readers over st and out.
func build(ctx context.Context, cfg *config.Config, log zerolog.Logger, src teleport.AuditLog, st *position.Store, out *outlet, t tails, m *metrics) (*pipeline, error) {
	start, fromNow, err := st.FixStartTime(ctx, cfg.StartTime, time.Now())
	if err != nil {
		return nil, err
	}
	if fromNow && !cfg.DryRun {
		log.Warn().Time("start_time", start).
			Msgf("no start-time given: reading from now; start-time fixed at %s, so the events Teleport holds from before are not read. "+
				"To read them, stop ingest and run `ingest backfill --start-time <earlier RFC 3339 time>`, then start ingest again",
				start.Format(time.RFC3339))
	}
	p := &pipeline{cfg: cfg, log: log, src: src, st: st, out: out, m: m, prog: newProgress(log, m), start: start}
	p.sessions = reader.NewSessions(src, out, st.Recordings(), t.sessions, reader.SessionOptions{
		SkipTypes:  cfg.SkipSessionTypes,
		MissingTTL: cfg.Ingest.MissingRecordingTTL,
		Metrics:    reader.SessionMetrics{Pending: m.sessionsRunning, Finished: m.sessionJobs, Missing: m.missing},
		Log:        log,
	})
	if err := p.sessions.Resume(); err != nil {
		return nil, err
	}
	audit := &reader.Audit{
		Filter:     reader.Filter{Types: cfg.Types, Skip: cfg.SkipEventTypes, Since: start},
		Out:        out,
		Recordings: p.sessions,
		Prog:       p.prog,
	}
	p.export = &reader.Exporter{
		Src: src, Audit: audit, Pos: st.Export(), Tail: t.audit, Prog: p.prog,
		Start: start, Concurrency: concurrency(cfg), Retrying: p.retrying, Log: log,
	}
	paging, err := st.Paging(start, cfg.Cursor)
	if err != nil {
		return nil, err
	}
	p.search = &reader.Searcher{
		Src: src, Audit: audit, Pos: paging, Tail: t.audit, Prog: p.prog,
		Types: cfg.Types, Start: start, Window: cmp.Or(cfg.WindowSize, 24*time.Hour), PageSize: pageSize(cfg),
	}
	return p, nil
}

// retrying books a read that failed and is retried: counted, and
// explained when the identity has expired.
func (p *pipeline) retrying() {
	p.m.readErrors.Inc()
	p.checkIdentity()
}

// checkIdentity logs an error when failing calls are explained by an
// expired Teleport identity; reading keeps retrying, as a renewed file
// (tbot) is picked up without a restart.
func (p *pipeline) checkIdentity() {
	c, ok := p.src.(interface{ CheckIdentity() error })
	if !ok {
		return
	}
	if err := c.CheckIdentity(); err != nil {
		p.log.Error().Err(err).Msg("calls to Teleport fail because the identity has expired; renew it (retrying meanwhile)")
	}
}

// runDry reads Teleport and logs what would be published, with all state
// in memory.
func runDry(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	src, err := teleport.Connect(ctx, cfg.Teleport, log)
	if err != nil {
		return err
	}
	defer src.Close()
	m := newMetrics(nil)
	log.Info().Msg("dry run: events are logged, nothing is published and no state is changed")
	p, err := build(ctx, cfg, log, src, position.Memory(), &outlet{m: m, log: log}, tails{}, m)
	if err != nil {
		return err
	}
	err = p.run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// readerSource is what the readers read Teleport through: the client
// itself. Tests replace it to shape the server's answers.
var readerSource = func(_ *config.Config, c *teleport.Client) teleport.AuditLog { return c }

// concurrency is how many export chunks are read at once.
func concurrency(cfg *config.Config) int {
	if cfg.Concurrency > 0 {
		return cfg.Concurrency
	}
	return 5
}

// pageSize is the search limit: ingest.page-size, the server's maximum
// unless set.
func pageSize(cfg *config.Config) int {
	if n := cfg.Ingest.PageSize; n > 0 {
		return min(n, config.MaxPageSize)
	}
	return config.MaxPageSize
}

// publishAckTimeout is how long ingest waits for a PubAck before
// publishing again. The messages in flight when a stream's leader dies are
// never answered: each second of this wait past the re-election (2-10 s)
// is a second without publishing (the default 10 s made a loss of the
// audit stream's leader stop publishing for 9 s beyond it). A retry is
// cheap and safe (the tail check finds what did land), so a PubAck slower
// than this on a loaded machine only costs a retry round.
const publishAckTimeout = 3 * time.Second

// lastSequences are the last sequences of the streams ingest publishes
// to, before it publishes: the floor of its first messages (see
// bus.WithTailCheck).
func lastSequences(ctx context.Context, b *bus.Bus) (map[string]uint64, error) {
	last := map[string]uint64{}
	for _, name := range guardedStreams(b.Cfg) {
		info, err := b.StreamInfo(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // 0; the guard reports a stream lost under positions
		}
		if err != nil {
			return nil, fmt.Errorf("%w: look up stream %q: %w", position.ErrBus, name, err)
		}
		last[name] = info.State.LastSeq
	}
	return last, nil
}

// streamOfSubject names the stream a subject ingest publishes is stored
// in.
func streamOfSubject(cfg config.NATSConfig) func(subject string) string {
	return func(subject string) string {
		switch {
		case strings.HasPrefix(subject, bus.AuditPrefix+"."):
			return cfg.AuditStream
		case strings.HasPrefix(subject, bus.SessionPrefix+"."):
			return cfg.SessionStream
		}
		return ""
	}
}

// embeddedStorage is the storage directory of the embedded server, "" with
// an external one.
func embeddedStorage(b *bus.Bus) string {
	if b.Embedded == nil {
		return ""
	}
	return b.Embedded.StoreDir()
}

// messageLimit is the largest message the audit and session streams take:
// the stream's max message size, and the server's max payload.
func messageLimit(b *bus.Bus) int {
	limit := int(b.Conn.MaxPayload())
	if s := int(b.Cfg.MaxMsgSize); s > 0 && (limit <= 0 || s < limit) {
		limit = s
	}
	return limit
}
