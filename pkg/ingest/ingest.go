// Package ingest is the pipeline stage between Teleport and the bus: it
// reads Teleport's audit log (bulk export API, or search paging on older
// servers) and the session recordings that session.upload events announce,
// and publishes each event once onto JetStream. It owns the read positions
// in the state bucket, the lease that makes one ingest process the reader,
// the progress report and the ingest metrics.
package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	metricsrv "github.com/teleport-event-bus/teleport-event-bus/pkg/metrics"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// defaultPoll is the poll interval when caught up and timeout is unset.
const defaultPoll = 5 * time.Second

// ingester is one reading run: the pieces between Teleport and the bus.
type ingester struct {
	cfg      *config.Config
	log      zerolog.Logger
	src      teleport.AuditLog
	st       *state
	out      *outlet
	m        *metrics
	prog     *progress
	sessions *sessions
	filter   filter
	start    time.Time
	pruned   time.Time // when finished session jobs were last pruned
	// guard checks the streams against the saved positions, skip holds
	// the events a recovery finds on the bus, loss counts messages removed
	// unacknowledged (all nil in a dry run).
	guard *guard
	skip  *skipSet
	loss  *lossWatcher
}

// pruneEvery is how often finished session jobs are looked for.
const pruneEvery = time.Hour

// Run reads Teleport and publishes onto the bus until ctx ends (nil is
// returned then), or, with exit-on-last-event, until it has caught up,
// everything is acknowledged and (embedded server) the durable consumers
// have delivered it all (see finish). Without a [nats] url it runs the embedded
// NATS server under storage. With several ingest processes on one bus, one
// holds the lease and reads; the others stand by and take over from its
// positions when it dies. With dry-run it reads and logs, publishing
// nothing and changing no state (no bus is needed).
func Run(ctx context.Context, cfg *config.Config, log zerolog.Logger) (err error) {
	// The credentials first: a bad identity stops ingest before the
	// store, the bucket or the streams are touched.
	if err := teleport.Check(ctx, cfg.Teleport); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return cfg.TeleportCredentialsError(err)
	}
	noteBatch(cfg, log)
	if cfg.DryRun {
		return runDry(ctx, cfg, log)
	}
	// Logged last, after the bus (and the embedded server) closed.
	defer func() {
		if err == nil && ctx.Err() != nil {
			log.Info().Msg("ingest stopped cleanly")
		}
	}()
	// A stop (SIGTERM) while starting up is a clean exit, not an error.
	stopped := func(err error) error {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	warnOpenBus(cfg, log)
	mb, err := startBudget(cfg)
	if err != nil {
		return err
	}
	if addr := cfg.Ingest.PprofAddr; addr != "" {
		prof, err := metricsrv.ListenProfiles(addr, log)
		if err != nil {
			return cfg.PprofListenError(err)
		}
		defer func() { _ = prof.Shutdown(context.WithoutCancel(ctx)) }()
	}
	b, err := bus.Open(ctx, cfg.NATS, cfg.Storage, "ingest", log, true, bus.WithSinkConsumers(cfg.Sink))
	if err != nil {
		return stopped(err)
	}
	defer b.Close()
	logBudget(mb, cfg.NATS.URL == "", log)
	kv, err := prepare(ctx, b, cfg.File, log)
	if err != nil {
		return stopped(err)
	}
	reg := metricsrv.NewRegistry()
	m := newMetrics(reg)
	m.memory = newMemoryMetrics(reg, mb, cfg.NATS.URL == "")
	if addr := cfg.MetricsAddrFor(config.Ingest); addr != "" {
		srv, err := metricsrv.Listen(addr, reg, func() error {
			if !b.Conn.IsConnected() {
				return errors.New("not connected to NATS")
			}
			return m.pause.ready()
		}, log)
		if err != nil {
			return cfg.MetricsListenError(config.Ingest, err)
		}
		defer func() { _ = srv.Shutdown(context.WithoutCancel(ctx)) }()
	}
	for {
		err := lead(ctx, cfg, log, b, kv, m)
		if !errors.Is(err, errLeaseLost) {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		log.Warn().Err(err).Msg("stopped reading; standing by")
	}
}

// warnOpenBus says, at start, when the embedded server will admit anyone:
// no users file, token or user is configured (a TOML from before
// configure wrote NATS credentials).
func warnOpenBus(cfg *config.Config, log zerolog.Logger) {
	n := cfg.NATS
	if n.URL != "" || n.Users != "" || n.Token != "" || n.User != "" {
		return
	}
	dir := "<directory of the TOML>"
	if cfg.File != "" {
		dir = filepath.Dir(cfg.File)
	}
	log.Warn().Str("listen", bus.WithDefaults(n).Listen).
		Msgf("the embedded NATS server is open: any local process can publish, read or delete the audit trail; close it with `configure --nats-credentials %s`, then restart ingest and fluentd-sink", dir)
}

// noteBatch says once, at start, that batch (from an older
// teleport-event-handler.toml, whose users often have batch = 20) does not
// set the page size: a search page costs Teleport the same whatever its
// size, so ingest pages with ingest.page-size.
func noteBatch(cfg *config.Config, log zerolog.Logger) {
	if !cfg.Given("batch") {
		return
	}
	log.Info().Int("batch", cfg.Batch).Int("page_size", pageSize(cfg)).
		Msg("batch is not the page size: audit log searches page with ingest.page-size (default: the server's maximum, 10000)")
}

// prepare opens the state bucket, checks that the streams the saved
// positions belong to are still there as they were (ErrStreamLost: a
// stream missing, recreated or cut short), and only then creates or
// updates the streams, so a lost stream is never silently replaced by an
// empty one. It tries again while JetStream cannot answer yet (a cluster
// that is still electing its leaders after a start), with a log line per
// try. Other errors end it at once.
func prepare(ctx context.Context, b *bus.Bus, cfgFile string, log zerolog.Logger) (jetstream.KeyValue, error) {
	bo := backoff.Backoff{Policy: backoff.Reconnect}
	for {
		kv, err := b.State(ctx)
		if err == nil {
			if err = ensureChecked(ctx, b, kv, cfgFile, log); err == nil {
				return kv, nil
			}
		}
		if ctx.Err() != nil || !bus.Unavailable(err) {
			return nil, err
		}
		d := bo.Next()
		log.Warn().Err(err).Int("attempt", bo.Attempt()).Dur("retry_in", d).Msg("JetStream not ready, retrying")
		if werr := backoff.Sleep(ctx, d); werr != nil {
			return nil, err
		}
	}
}

// ensureChecked compares the streams with the saved positions, then
// creates or updates the streams and records the ones the positions do not
// know yet.
func ensureChecked(ctx context.Context, b *bus.Bus, kv jetstream.KeyValue, cfgFile string, log zerolog.Logger) error {
	st, err := newState(ctx, kv, b.Cfg.StateBucket)
	if err != nil {
		return err
	}
	if err := checkStreams(ctx, b.StreamInfo, st, b.Cfg, cfgFile); err != nil {
		return err
	}
	if err := b.EnsureStreams(ctx); err != nil {
		return err
	}
	return adoptStreams(ctx, b.StreamInfo, kv, st, b.Cfg, log)
}

// lead waits for the lease, then reads until ctx ends, the work is done
// (exit-on-last-event) or the lease is lost. The lease is renewed from the
// moment it is held, so a slow connection to Teleport does not let it
// lapse.
func lead(ctx context.Context, cfg *config.Config, log zerolog.Logger, b *bus.Bus, kv jetstream.KeyValue, m *metrics) error {
	l := newLease(kv, cfg.Ingest.LeaseTTL, log)
	l.memory = m.memory.report
	if err := l.acquire(ctx); err != nil {
		return err
	}
	m.leader.Set(1)
	defer m.leader.Set(0)
	defer l.release(context.WithoutCancel(ctx))

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(lctx)
	g.Go(func() error {
		err := l.keep(gctx)
		if gctx.Err() != nil && !errors.Is(err, errLeaseLost) {
			return nil
		}
		return err
	})
	g.Go(func() error {
		defer cancel()
		return readWith(gctx, cfg, log, b, kv, m, l.gate)
	})
	return g.Wait()
}

// readWith connects to Teleport and runs the readers over the bus; gate
// is the lease's (see lease.gate), waited on before every publish.
func readWith(ctx context.Context, cfg *config.Config, log zerolog.Logger, b *bus.Bus, kv jetstream.KeyValue, m *metrics, gate func(context.Context) error) error {
	src, err := teleport.Connect(ctx, cfg.Teleport, log)
	if err != nil {
		return err
	}
	defer src.Close()
	// Reading again: a "caught up" from an earlier run no longer holds.
	if err := bus.ClearCaughtUp(ctx, kv); err != nil {
		return err
	}
	st, err := newState(ctx, kv, b.Cfg.StateBucket)
	if err != nil {
		return err
	}
	g, err := newGuard(ctx, b.StreamInfo, st, b.Cfg, cfg.File, log)
	if err != nil {
		return err
	}
	last, err := lastSequences(ctx, b)
	if err != nil {
		return err
	}
	pub := bus.NewPublisher(b.JS, cfg.Ingest.MaxInFlight, bus.WithPublisherLog(log),
		bus.WithTailCheck(streamOfSubject(b.Cfg), last), bus.WithAckTimeout(publishAckTimeout), bus.WithPace(m.memory.pace()))
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = pub.Close(cctx)
	}()
	st.guard = g
	if b.Embedded != nil {
		g.store, g.storage = b.Embedded.StoreError, b.Embedded.StoreDir()
	}
	skip, err := loadRecovery(ctx, b, st, log)
	if err != nil {
		return err
	}
	out := &outlet{pub: pub, limit: messageLimit(b), m: m, log: log, guard: g, skip: skip, storage: embeddedStorage(b), gate: gate,
		js: b.JS, audit: b.Cfg.AuditStream, sessions: b.Cfg.SessionStream}
	in, err := newIngester(ctx, cfg, log, readerSource(cfg, src), st, out, m)
	if err != nil {
		return err
	}
	in.guard, in.skip = g, skip
	in.loss = &lossWatcher{streams: guardedStreams(b.Cfg), stream: b.StreamInfo, consumers: b.ConsumerInfos, m: m, log: log}
	err = runWithLock(ctx, cfg, log, b, src, m, in.run)
	if ctx.Err() != nil {
		// Stopped (SIGTERM, or the lease lost): say what the next run
		// resumes from. Only positions whose events were acknowledged
		// are ever saved.
		log.Info().Dict("saved", st.saved()).Int64("events", in.prog.events.Load()).
			Msg("stopped reading; positions saved in the state bucket")
		return err
	}
	if err != nil || !cfg.ExitOnLastEvent {
		return err
	}
	// Caught up with everything acknowledged (in.run drained the outlet).
	return finish(ctx, cfg, log, b, kv)
}

// readerSource is what the readers read Teleport through: the client
// itself. Tests replace it to shape the server's answers.
var readerSource = func(_ *config.Config, c *teleport.Client) teleport.AuditLog { return c }

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
			return nil, fmt.Errorf("%w: look up stream %q: %w", errBus, name, err)
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

// runDry reads Teleport and logs what would be published, with all state
// in memory.
func runDry(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	src, err := teleport.Connect(ctx, cfg.Teleport, log)
	if err != nil {
		return err
	}
	defer src.Close()
	st, _ := newState(ctx, nil, "")
	m := newMetrics(nil)
	out := &outlet{m: m, log: log}
	log.Info().Msg("dry run: events are logged, nothing is published and no state is changed")
	in, err := newIngester(ctx, cfg, log, src, st, out, m)
	if err != nil {
		return err
	}
	err = in.run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// newIngester fixes the start time and builds the reading pieces.
func newIngester(ctx context.Context, cfg *config.Config, log zerolog.Logger, src teleport.AuditLog, st *state, out *outlet, m *metrics) (*ingester, error) {
	start, fromNow, err := st.fixStartTime(ctx, cfg.StartTime, time.Now())
	if err != nil {
		return nil, err
	}
	if fromNow && !cfg.DryRun {
		log.Warn().Time("start_time", start).
			Msgf("no start-time given: reading from now; start-time fixed at %s, so the events Teleport holds from before are not read. "+
				"To read them, stop ingest and run `ingest backfill --start-time <earlier RFC 3339 time>`, then start ingest again",
				start.Format(time.RFC3339))
	}
	in := &ingester{
		cfg: cfg, log: log, src: src, st: st, out: out, m: m,
		prog:   newProgress(log, m),
		filter: filter{types: cfg.Types, skip: cfg.SkipEventTypes, since: start},
		start:  start,
	}
	in.sessions = newSessions(in)
	if err := in.sessions.resume(); err != nil {
		return nil, err
	}
	return in, nil
}

// concurrency is how many export chunks are read at once.
func (in *ingester) concurrency() int {
	if in.cfg.Concurrency > 0 {
		return in.cfg.Concurrency
	}
	return 5
}

// run reads until ctx ends or, with exit-on-last-event, until caught up
// with every event acknowledged and every recording job finished.
func (in *ingester) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := in.sessions.run(gctx, cmp.Or(in.cfg.Ingest.SessionConcurrency, in.concurrency()))
		if gctx.Err() != nil {
			return nil
		}
		return err
	})
	g.Go(func() error { return in.prog.run(gctx, in.cfg.Ingest.ProgressInterval) })
	if in.guard != nil {
		g.Go(func() error { return in.guard.watch(gctx) })
	}
	if in.loss != nil {
		g.Go(func() error { return in.loss.run(gctx) })
	}
	g.Go(func() error {
		defer cancel()
		err := in.read(gctx)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil
		}
		return err
	})
	return g.Wait()
}

// read runs passes over the audit log: the bulk export API first, search
// paging if the server lacks it (or --cursor or an earlier run chose it).
// Transient errors are retried with backoff, forever.
func (in *ingester) read(ctx context.Context) error {
	x := &exporter{in: in}
	s, err := newSearcher(in)
	if err != nil {
		return err
	}
	var st searchState
	useSearch, _ := in.st.get(keySearch, &st)
	switch {
	case in.cfg.Cursor != "":
		useSearch = true
		in.log.Info().Str("cursor", in.cfg.Cursor).Int("page_size", s.pageSize).Msg("reading the audit log with SearchUnstructuredEvents from the given cursor")
	case useSearch:
		in.log.Info().Int("page_size", s.pageSize).Msg("reading the audit log with SearchUnstructuredEvents paging (chosen by an earlier run)")
	default:
		in.log.Info().Time("start_time", in.start).Msg("reading the audit log with the bulk export API")
	}
	poll := in.cfg.Timeout
	if poll <= 0 {
		poll = defaultPoll
	}
	b := backoff.Backoff{Policy: backoff.Reconnect}
	for {
		var err error
		began := time.Now()
		if err := in.guard.check(ctx); err != nil {
			return err
		}
		if useSearch {
			err = s.pass(ctx, time.Now().UTC())
		} else {
			err = x.pass(ctx, time.Now().UTC())
		}
		switch {
		case err == nil:
			b.Reset()
			if err := in.finishRecovery(ctx); err != nil {
				in.log.Warn().Err(err).Msg("finishing the recovery failed; trying again after the next pass")
			}
			in.prune(ctx)
			if in.cfg.ExitOnLastEvent {
				in.prog.caughtUp.Store(true)
				if err := in.drain(ctx); err != nil {
					return err
				}
				return in.finishRecovery(ctx)
			}
			in.prog.passDone()
			// Passes start every poll interval: the time a pass takes does
			// not add to the delay of new events.
			if werr := backoff.Sleep(ctx, poll-time.Since(began)); werr != nil {
				return werr
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errBulkUnsupported):
			useSearch = true
			in.log.Warn().Err(err).Int("page_size", s.pageSize).Msg("server lacks the bulk export API (Teleport older than v17): reading the audit log with SearchUnstructuredEvents paging")
		case retryable(err):
			in.m.readErrors.Inc()
			in.checkIdentity()
			d := retryDelay(&b, err)
			lvl := zerolog.WarnLevel
			if noRoom(err) {
				lvl = zerolog.DebugLevel // the pause is logged once
			}
			in.log.WithLevel(lvl).Err(err).Dur("retry_in", d).Int("attempt", b.Attempt()).Msg("reading the audit log failed, retrying")
			if werr := backoff.Sleep(ctx, d); werr != nil {
				return werr
			}
		default:
			return err
		}
	}
}

// prune removes finished session jobs from the state, at most once per
// pruneEvery. A failure is logged and tried again next time.
func (in *ingester) prune(ctx context.Context) {
	if time.Since(in.pruned) < pruneEvery {
		return
	}
	in.pruned = time.Now()
	n, err := pruneSessions(ctx, in.st, time.Now())
	if err != nil {
		in.log.Warn().Err(err).Int("removed", n).Msg("removing finished session jobs from the state failed")
		return
	}
	if n > 0 {
		in.log.Info().Int("removed", n).Dur("older_than", keepFinished).Msg("removed finished session jobs from the state")
	}
}

// checkIdentity logs an error when failing calls are explained by an
// expired Teleport identity; reading keeps retrying, as a renewed file
// (tbot) is picked up without a restart.
func (in *ingester) checkIdentity() {
	c, ok := in.src.(interface{ CheckIdentity() error })
	if !ok {
		return
	}
	if err := c.CheckIdentity(); err != nil {
		in.log.Error().Err(err).Msg("calls to Teleport fail because the identity has expired; renew it (retrying meanwhile)")
	}
}

// drainGrace bounds how long exit-on-last-event waits for recordings that
// are missing: they stay in the state and the next run retries them until
// missing-recording-ttl.
var drainGrace = 30 * time.Second

// drain waits until every recording job has finished or given up and
// every publish is acknowledged. Jobs that only wait for missing
// recordings hold the exit up for at most drainGrace (or the TTL, if
// shorter).
func (in *ingester) drain(ctx context.Context) error {
	grace := drainGrace
	if ttl := in.cfg.Ingest.MissingRecordingTTL; ttl > 0 && ttl < grace {
		grace = ttl + time.Second
	}
	start := time.Now()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !in.sessions.idle() {
		if n, ok := in.sessions.onlyMissing(); ok && time.Since(start) >= grace {
			in.log.Warn().Int("sessions", n).Msg("exiting with session recordings still missing; the next run tries them again until missing-recording-ttl")
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if err := in.out.flush(ctx); err != nil {
		return err
	}
	in.log.Info().Int64("events", in.prog.events.Load()).Msg("caught up and everything acknowledged (exit-on-last-event)")
	return nil
}
