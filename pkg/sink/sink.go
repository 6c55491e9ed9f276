// Package sink is the Fluentd side of the pipeline: it reads the audit and
// session streams through durable pull consumers and delivers the events to
// Fluentd's in_http or in_forward. The pieces are separate: a consumer per
// stream (consumer.go) feeds a Batcher that groups events per target (a URL
// for in_http, a tag for in_forward), batches go to a Deliverer
// (deliverer.go) that sends them with a fluentd.Client or fluentd.Forward
// and settles each message (ack, NAK with backoff, or dead letter,
// deadletter.go) by Fluentd's answer. A Breaker (breaker.go) pauses the
// delivery, and with it the intake, while Fluentd refuses events, and
// probes it so the backlog flows as soon as it is back. Any number of sink
// processes with the same consumer names share the work.
package sink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/metrics"
)

// How often the consumers' backlog is read: for the pending gauge, and more
// often with exit-on-last-event so the exit comes soon after the last ack.
const (
	pendingInterval   = 5 * time.Second
	idleCheckInterval = 250 * time.Millisecond
)

// Run is the fluentd-sink command: it connects to NATS (retrying while NATS
// is unreachable, so it may start first), creates the streams
// that are missing (except in a dry run; existing ones are left as they
// are), builds the Fluentd client, serves metrics on
// sink.metrics-addr and delivers until ctx is cancelled (then it finishes
// in-flight requests and acks within sink.shutdown-timeout and returns nil)
// or, with exit-on-last-event, until nothing is left to deliver.
func Run(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	defer setGCTuning()()
	b, err := openBus(ctx, cfg, log)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		log.Info().Msg("sink stopped before NATS could be reached")
		return nil
	}
	if err != nil {
		return err
	}
	defer b.Close()
	// A dry run changes nothing, streams included: it reads what is there.
	// Otherwise the sink creates missing streams, so it may start before
	// ingest, but leaves the limits of existing ones to ingest.
	if !cfg.DryRun {
		if err := b.CreateMissingStreams(ctx); err != nil {
			return err
		}
	}
	var send Sender
	switch {
	case cfg.DryRun:
	case fluentd.ForwardScheme(cfg.Fluentd.URL):
		client, err := fluentd.NewForward(cfg.Fluentd, log, cfg.Sink.Gzip)
		if err != nil {
			return err
		}
		defer client.Close()
		// A wrong shared key or user is a setup error: stop now, loudly,
		// rather than retry it forever.
		if err := client.Probe(ctx); err != nil {
			return err
		}
		send = client
	default:
		client, err := fluentd.New(cfg.Fluentd, log, fluentd.WithGzip(cfg.Sink.Gzip))
		if err != nil {
			return err
		}
		defer client.Close()
		send = client
	}
	reg := metrics.NewRegistry()
	s := New(b.JS, b.Conn, send, cfg, log, WithMetrics(NewMetrics(reg)))
	if addr := cfg.MetricsAddrFor(config.Sink); addr != "" {
		srv, err := metrics.Listen(addr, reg, s.Ready, log)
		if err != nil {
			return cfg.MetricsListenError(config.Sink, err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	return s.Run(ctx)
}

// The sink's GOGC and GOMEMLIMIT unless the environment sets them. Its
// live heap is small (the messages in flight: a few MB with ordinary events)
// while it allocates for every message it reads and acknowledges, so with
// Go's default GOGC of 100 it collects many times a second at full speed;
// 400 saves most of that work (a sixth of its CPU per event in make
// bench-sink) for a few MB of RSS. The memory limit keeps the larger factor
// from growing the heap past 128 MiB when big events fill the pull buffer:
// the collector then works harder instead.
const (
	sinkGCPercent   = 400
	sinkMemoryLimit = 128 << 20
)

// setGCTuning applies them and returns a function that restores the
// previous settings (Run also runs inside tests' processes).
func setGCTuning() (restore func()) {
	var undo []func()
	if os.Getenv("GOGC") == "" {
		prev := debug.SetGCPercent(sinkGCPercent)
		undo = append(undo, func() { debug.SetGCPercent(prev) })
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		prev := debug.SetMemoryLimit(sinkMemoryLimit)
		undo = append(undo, func() { debug.SetMemoryLimit(prev) })
	}
	return func() {
		for _, f := range undo {
			f()
		}
	}
}

// Option changes a Sink built by New.
type Option func(*Sink)

// WithMetrics records into m instead of unregistered collectors.
func WithMetrics(m *Metrics) Option { return func(s *Sink) { s.metrics = m } }

// WithBackoff sets the retry delays (tests use short ones).
func WithBackoff(b backoff.Policy) Option { return func(s *Sink) { s.backoff = b } }

// Sink is one sink process's delivery pipeline.
type Sink struct {
	js      jetstream.JetStream
	nc      *nats.Conn
	send    Sender
	cfg     *config.Config
	sc      config.SinkConfig
	log     zerolog.Logger
	metrics *Metrics
	backoff backoff.Policy

	// outstanding counts messages fetched and not yet settled.
	outstanding atomic.Int64
	deliverer   *Deliverer
	ready       atomic.Bool
	// tags, for an in_forward url, are the targets of items instead of
	// URLs; tagsErr says why there are none.
	tags    *fluentd.Tags
	tagsErr error
	// marks records each durable consumer in the state bucket.
	marks *marks
}

// New builds a Sink reading through js (nc is its connection, for
// readiness and the final flush) and sending with send, which may be nil
// for a dry run.
func New(js jetstream.JetStream, nc *nats.Conn, send Sender, cfg *config.Config, log zerolog.Logger, opts ...Option) *Sink {
	s := &Sink{js: js, nc: nc, send: send, cfg: cfg, sc: withDefaults(cfg.Sink), log: log, backoff: DefaultBackoff,
		marks: newMarks(js, bus.WithDefaults(cfg.NATS).StateBucket)}
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if fluentd.ForwardScheme(cfg.Fluentd.URL) {
		tags, err := fluentd.ForwardTags(cfg.Fluentd)
		s.tags, s.tagsErr = &tags, err
	}
	s.deliverer = &Deliverer{
		Send:        send,
		DeadLetters: DeadLetters{JS: js},
		Backoff:     s.backoff,
		Breaker:     NewBreaker(DefaultProbes, log, s.metrics.BreakerOpen),
		MaxDeliver:  s.sc.MaxDeliver,
		AckWait:     s.sc.AckWait,
		Metrics:     s.metrics,
		Log:         log,
		Settled:     func(n int) { s.outstanding.Add(-int64(n)) },
	}
	return s
}

// withDefaults fills zero fields with config.Default's values.
func withDefaults(sc config.SinkConfig) config.SinkConfig {
	d := config.Default().Sink
	if sc.AckWait <= 0 {
		sc.AckWait = d.AckWait
	}
	if sc.MaxAckPending <= 0 {
		sc.MaxAckPending = d.MaxAckPending
	}
	if sc.MaxDeliver <= 0 {
		sc.MaxDeliver = d.MaxDeliver
	}
	if sc.BatchSize <= 0 {
		sc.BatchSize = d.BatchSize
	}
	if sc.BatchBytes <= 0 {
		sc.BatchBytes = d.BatchBytes
	}
	if sc.BatchWait <= 0 {
		sc.BatchWait = d.BatchWait
	}
	if sc.InFlight <= 0 {
		sc.InFlight = d.InFlight
	}
	if sc.ShutdownTimeout <= 0 {
		sc.ShutdownTimeout = d.ShutdownTimeout
	}
	return sc
}

// Ready reports why the sink cannot deliver now: NATS disconnected, or
// Fluentd refusing events (the breaker open).
func (s *Sink) Ready() error {
	if s.nc != nil && !s.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	if !s.ready.Load() {
		return errors.New("consumers not open yet")
	}
	if s.deliverer.Failing() {
		return errors.New("Fluentd refuses events; delivery paused while the sink probes it")
	}
	return nil
}

// consumer is an open consumer and the source it reads.
type consumer struct {
	src Source
	c   jetstream.Consumer
}

// Run delivers until ctx is done, a consumer fails, or (exit-on-last-event)
// nothing is left; see the package Run for the shutdown behaviour.
func (s *Sink) Run(ctx context.Context) error {
	if s.send == nil && !s.cfg.DryRun {
		return errors.New("sink: no Fluentd client (only a dry run may go without)")
	}
	if s.tagsErr != nil {
		return s.tagsErr
	}
	consumers, err := s.open(ctx)
	if err != nil {
		return err
	}
	s.ready.Store(true)

	// fetchCtx stops the intake; sendCtx bounds what is in flight, and ends
	// sink.shutdown-timeout after the intake stopped.
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	sendCtx, stopSend := afterDone(fetchCtx, s.sc.ShutdownTimeout)
	defer stopSend()
	var stopAt atomic.Pointer[time.Time]
	defer context.AfterFunc(ctx, func() {
		now := time.Now()
		stopAt.Store(&now)
	})()

	s.deliverer.Stopping = fetchCtx
	batches := make(chan *Batch)
	queue := newBatchQueue(&Batcher{MaxEvents: s.sc.BatchSize, MaxBytes: s.sc.BatchBytes, Wait: s.sc.BatchWait}, batches)
	queue.pause, queue.release = s.deliverer.Breaker.Opened, s.deliverer.release

	var intake errgroup.Group
	for _, c := range consumers {
		intake.Go(func() error {
			err := fetch(fetchCtx, sendCtx, c.c, c.src, s.pullBuffer(), s.deliverer.Breaker, func(m jetstream.Msg) {
				s.outstanding.Add(1)
				queue.add(s.item(c.src, m))
			}, s.log)
			if err != nil {
				stopFetch()
			}
			return err
		})
	}
	var pipeline errgroup.Group
	pipeline.Go(func() error {
		err := intake.Wait()
		queue.close()
		return err
	})
	pipeline.Go(func() error {
		queue.run()
		return nil
	})
	for range s.sc.InFlight {
		pipeline.Go(func() error {
			for b := range batches {
				s.deliver(sendCtx, b)
			}
			return nil
		})
	}
	pipeline.Go(func() error {
		s.watch(fetchCtx, consumers, stopFetch)
		return nil
	})
	err = pipeline.Wait()
	// What is left (the final flush, the positions) ends with the
	// shutdown timeout, whatever NATS is doing.
	fctx, cancel := s.finalContext(ctx, &stopAt)
	defer cancel()
	if s.nc != nil && s.nc.IsConnected() {
		// Acks are fire-and-forget publishes: make sure they left.
		_ = s.nc.FlushWithContext(fctx)
	}
	if err != nil {
		return err
	}
	s.logStop(fctx, consumers)
	return nil
}

// finalFlush bounds the last steps of a sink that stopped by itself
// (exit-on-last-event, a failed consumer).
const finalFlush = 5 * time.Second

// finalContext is the context of the last steps after the pipeline
// stopped: it ends sink.shutdown-timeout after the stop was asked for
// (*stopAt), or finalFlush from now when the sink stopped by itself.
func (s *Sink) finalContext(ctx context.Context, stopAt *atomic.Pointer[time.Time]) (context.Context, context.CancelFunc) {
	base := context.WithoutCancel(ctx)
	if at := stopAt.Load(); at != nil {
		return context.WithDeadline(base, at.Add(s.sc.ShutdownTimeout))
	}
	return context.WithTimeout(base, finalFlush)
}

// logStop says, within ctx, where each durable consumer stands now that
// the sink stopped: the stream sequence acknowledged through (what the next sink
// resumes after), what is left, and what this sink fetched but did not
// settle (redelivered after ack-wait).
func (s *Sink) logStop(ctx context.Context, consumers []consumer) {
	arr := zerolog.Arr()
	for _, c := range consumers {
		d := zerolog.Dict().Str("stream", c.src.Stream).Str("consumer", c.src.Consumer)
		var info *jetstream.ConsumerInfo
		err := errors.New("not connected to NATS")
		if s.nc == nil || s.nc.IsConnected() {
			info, err = s.settledInfo(ctx, c)
		}
		if err != nil {
			d = d.Str("error", fmt.Sprintf("consumer info: %v", err))
		} else {
			d = d.Uint64("acknowledged_through", info.AckFloor.Stream).Uint64("pending", info.NumPending).
				Int("unacknowledged", info.NumAckPending)
		}
		arr = arr.Dict(d)
	}
	s.log.Info().Array("consumers", arr).Int64("unsettled", s.outstanding.Load()).
		Msg("sink stopped cleanly; positions saved in the durable consumers")
}

// ackSettleWait bounds how long the stop line waits for the server to
// apply this sink's last acknowledgements: an ack is sent without a reply,
// and the server applies it after answering a consumer info asked right
// behind it (seen under load: acknowledged through 11 of 25, 14
// unacknowledged, with every event delivered and acknowledged).
const ackSettleWait = 2 * time.Second

// settledInfo is c's consumer info once the server has applied this
// sink's acknowledgements: it flushes the connection, then asks again
// while the consumer shows unacknowledged messages and this sink holds
// none, for up to ackSettleWait (another sink's, on a shared durable,
// keep it waiting that long at most).
func (s *Sink) settledInfo(ctx context.Context, c consumer) (*jetstream.ConsumerInfo, error) {
	if s.nc != nil {
		if err := s.nc.FlushWithContext(ctx); err != nil {
			return nil, fmt.Errorf("flush the acknowledgements: %w", err)
		}
	}
	deadline := time.Now().Add(ackSettleWait)
	for {
		info, err := c.c.Info(ctx)
		if err != nil || info.NumAckPending == 0 || s.outstanding.Load() > 0 || time.Now().After(deadline) {
			return info, err
		}
		select {
		case <-ctx.Done():
			return info, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// afterDone returns a context that is cancelled timeout after ctx is done
// (or by the returned function, which also releases the timer).
func afterDone(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var (
		mu       sync.Mutex
		timer    *time.Timer
		released bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !released {
			timer = time.AfterFunc(timeout, cancel)
		}
	})
	return out, func() {
		stop()
		mu.Lock()
		released = true
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// open creates or updates the durable consumers, or, for a dry run, opens
// ordered ephemeral ones that leave no trace.
func (s *Sink) open(ctx context.Context) ([]consumer, error) {
	srcs, err := Sources(s.cfg)
	if err != nil {
		return nil, err
	}
	var out []consumer
	for _, src := range srcs {
		c, err := s.openConsumer(ctx, src)
		if err != nil {
			return nil, err
		}
		s.log.Info().Str("stream", src.Stream).Str("consumer", src.Consumer).Strs("filters", src.Filters).Bool("dry_run", s.cfg.DryRun).Msg("reading stream")
		out = append(out, consumer{src: src, c: c})
	}
	return out, nil
}

// openConsumer opens src's consumer (an ordered one in a dry run), trying
// again while JetStream cannot answer yet: a cluster that is still electing
// its leaders after a restart answers 503 or not at all. Each failed try is
// logged with the wait before the next. Other errors (no such stream, a
// conflicting consumer) end it at once, and so does a request NATS refused
// this sink's user: its answer never comes, whatever the wait.
func (s *Sink) openConsumer(ctx context.Context, src Source) (jetstream.Consumer, error) {
	for attempt := 1; ; attempt++ {
		var c jetstream.Consumer
		var err error
		if s.cfg.DryRun {
			c, err = OpenOrdered(ctx, s.js, src)
		} else {
			c, err = s.openDurable(ctx, src)
		}
		if err == nil || ctx.Err() != nil || !bus.Unavailable(err) {
			return c, err
		}
		if refused := bus.Refused(s.nc); refused != nil {
			user := ""
			if s.cfg.NATS.NKey != "" {
				user = fmt.Sprintf(" (nkey seed file %q)", s.cfg.NATS.NKey)
			}
			return nil, fmt.Errorf("open consumer %q on stream %s: NATS refused a request of this sink's user%s: %w: "+
				"the sink needs the fluentd-sink role (sink.nats-nkey: nats-fluentd-sink.nk of the configure run that made the server's users) "+
				"and the consumer names of the configuration those users were made from (sink.audit-consumer, sink.session-consumer)",
				src.Consumer, src.Stream, user, refused)
		}
		delay := connectBackoff.Delay(uint64(attempt))
		s.log.Warn().Err(err).Str("stream", src.Stream).Str("consumer", src.Consumer).Int("attempt", attempt).
			Dur("retry_in", delay).Msg("JetStream not ready, retrying")
		if werr := backoff.Sleep(ctx, delay); werr != nil {
			return nil, gaveUp(err, werr)
		}
	}
}

// pullBuffer is how many messages the client asks for ahead: enough to keep
// every request slot busy, never more than the consumer's max ack pending.
func (s *Sink) pullBuffer() int {
	n := max(2*s.sc.BatchSize*s.sc.InFlight, 256)
	return min(n, s.sc.MaxAckPending)
}

// item routes a message: audit events to fluentd.url, session events to
// session-url + ".<sid>.log". For in_forward the target is the tag
// instead: the audit tag, or the session tag of the same form.
func (s *Sink) item(src Source, m jetstream.Msg) Item {
	it := Item{URL: s.cfg.Fluentd.URL, Data: m.Data(), Msg: m, Stream: src.Stream, Received: time.Now()}
	if s.tags != nil {
		it.URL = s.tags.Audit
	}
	if src.Session {
		sid := m.Headers().Get(bus.HeaderSessionID)
		if sid == "" {
			sid = strings.TrimPrefix(m.Subject(), bus.SessionPrefix+".")
		}
		if s.tags != nil {
			it.URL = s.tags.Session(sid)
		} else {
			it.URL = fluentd.SessionURL(s.cfg.Fluentd.SessionURL, sid)
		}
	}
	return it
}

// deliver sends a batch, or in a dry run logs what it would send.
func (s *Sink) deliver(ctx context.Context, b *Batch) {
	if !s.cfg.DryRun {
		s.deliverer.Deliver(ctx, b)
		return
	}
	s.log.Info().Str("url", b.URL).Int("events", len(b.Items)).Int("bytes", b.Bytes).Msg("dry run: would send")
	if s.log.GetLevel() <= zerolog.DebugLevel {
		for _, it := range b.Items {
			s.log.Debug().Str("url", b.URL).RawJSON("event", it.Data).Msg("dry run: event")
		}
	}
	s.outstanding.Add(-int64(len(b.Items)))
}

// watch updates the pending gauge and, with exit-on-last-event, stops the
// intake once ingest has said it is caught up (bus.CaughtUpKey), the
// consumers have delivered up to the sequences it gave, and nothing is
// pending on the server or in flight here.
func (s *Sink) watch(ctx context.Context, consumers []consumer, stop func()) {
	every := pendingInterval
	if s.cfg.ExitOnLastEvent {
		every = idleCheckInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	caught := &bus.CaughtUpReader{NC: s.js.Conn(), Bucket: bus.WithDefaults(s.cfg.NATS).StateBucket}
	w := waitLog{log: s.log}
	idle := 0
	for {
		var cu *bus.CaughtUp
		if s.cfg.ExitOnLastEvent {
			// Read the key before the consumers: their info then covers
			// every message the key accounts for.
			var err error
			cu, err = caught.Read(ctx)
			if err != nil && ctx.Err() == nil {
				w.say("reading whether ingest is caught up failed; trying again", err)
			}
		}
		busy := s.readPending(ctx, consumers, cu)
		switch {
		case !s.cfg.ExitOnLastEvent:
		case busy:
			idle = 0
		case cu == nil:
			idle = 0
			w.say("nothing pending; waiting for ingest to say it is caught up (key "+bus.CaughtUpKey+" in bucket "+caught.Bucket+")", nil)
		default:
			// Two quiet readings in a row: an ordered consumer (dry run)
			// has no ack pending count to cover messages in the client's
			// buffer.
			if idle++; idle >= 2 {
				s.log.Info().Time("ingest_caught_up", cu.Time).Any("streams", cu.Streams).
					Msg("ingest is caught up and everything is delivered, exiting (exit-on-last-event)")
				stop()
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// waitLog logs a waiting state once, and again only when it changes.
type waitLog struct {
	log  zerolog.Logger
	last string
}

func (w *waitLog) say(msg string, err error) {
	key := msg
	if err != nil {
		key += err.Error()
	}
	if key == w.last {
		return
	}
	w.last = key
	if err != nil {
		w.log.Warn().Err(err).Msg(msg)
		return
	}
	w.log.Info().Msg(msg)
}

// readPending updates the pending gauge and reports whether anything is
// left: on the server, fetched and not yet settled here, or, when cu is
// set, not yet delivered up to the sequence ingest reported for the
// stream. A consumer with filter subjects may never see that sequence (it
// can be a message the filter skips): for it, nothing pending on the
// server, read after cu, is enough.
func (s *Sink) readPending(ctx context.Context, consumers []consumer, cu *bus.CaughtUp) (busy bool) {
	// Read the local count first: a message fetched after this read is
	// still pending on the server when its info is read.
	busy = s.outstanding.Load() > 0
	for _, c := range consumers {
		info, err := backlog(ctx, c.c)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn().Err(err).Str("stream", c.src.Stream).Msg("reading consumer info")
			}
			busy = true
			continue
		}
		if !s.cfg.DryRun && s.marks.due(c.src.Consumer, info.AckFloor.Stream) {
			s.recordFloor(ctx, c.src, info)
		}
		n := info.NumPending + uint64(info.NumAckPending)
		s.metrics.ConsumerPending.WithLabelValues(c.src.Stream).Set(float64(n))
		busy = busy || n > 0
		if cu != nil && len(c.src.Filters) == 0 && info.Delivered.Stream < cu.Streams[c.src.Stream] {
			busy = true
		}
	}
	return busy
}
