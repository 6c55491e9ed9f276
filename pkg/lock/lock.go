// Package lock is a consumer of the bus that locks Teleport users after
// repeated failed logins (the lock-* keys of teleport-event-handler). It
// reads audit.user.login through its own durable consumer, independent of
// the Fluentd sink, so a slow Fluentd never delays a lock and a lock error
// never resends anything to Fluentd. It owns the failed-login counters in
// the state bucket (one per user and login, a sliding window of event
// times, compare-and-set updates), the locks it upserts in Teleport and the
// teleport_event_bus_lock_* metrics. It needs only pkg/bus and a Teleport
// client.
package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// DefaultDurable is the name of the watcher's durable consumer.
// The NATS roles let only ingest use it.
const DefaultDurable = bus.LockConsumer

// Defaults of Options.
const (
	defaultAckWait    = 30 * time.Second
	defaultPull       = 32
	defaultRetryBase  = time.Second
	defaultRetryMax   = time.Minute
	defaultStaleAfter = time.Hour
	stateTimeout      = 10 * time.Second
)

// Enabled reports whether the configuration asks for locking: lock.enabled
// is on and dry-run is off. Locking is off by default.
func Enabled(cfg *config.Config) bool {
	return cfg != nil && cfg.Lock.Enabled && !cfg.DryRun
}

// Options configure a Watcher. Only Lock is required.
type Options struct {
	// Lock holds the lock-* keys: the threshold, the period, how long a
	// lock lasts and whether a successful login resets the count.
	Lock config.LockConfig
	// Stream is the audit stream (default: the bus's [nats] audit stream).
	Stream string
	// Durable names the consumer (default DefaultDurable). Watchers of one
	// bus share it: each login event goes to one of them.
	Durable string
	// AckWait is how long a message may be in hand before JetStream
	// redelivers it (default 30 s).
	AckWait time.Duration
	// RetryBase and RetryMax shape the backoff of a failed lock or state
	// update: RetryBase doubled per earlier delivery, capped at RetryMax,
	// with jitter (defaults 1 s and 1 min).
	RetryBase, RetryMax time.Duration
	// StaleAfter ignores failed logins whose event time is more than this
	// before the wall clock (default 1 h, at least the period), so turning
	// locking on over a long stream history, or a backfill of old events,
	// does not lock users for failures long past.
	StaleAfter time.Duration
	// Metrics receive the counts; nil counts into unregistered collectors.
	Metrics *Metrics
	// Log receives one line per lock and per error.
	Log zerolog.Logger
	// Now is the wall clock for lock expiry and staleness (default
	// time.Now). Windows use event times, never this clock.
	Now func() time.Time
}

// Watcher counts failed logins from the bus and locks users in Teleport.
// Create it with New, run it with Run.
type Watcher struct {
	opts     Options
	tp       Locker
	cons     jetstream.Consumer
	counters counters
	m        *Metrics
	log      zerolog.Logger
}

// New checks the lock settings, checks that Teleport lets tp create locks
// (see CheckPermission: a role without lock create/update is a clear
// error here, at start-up), opens the state bucket and creates or updates
// the durable consumer on audit.user.login. Call it only when Enabled.
func New(ctx context.Context, b *bus.Bus, tp Locker, opts Options) (*Watcher, error) {
	opts, err := opts.withDefaults(b)
	if err != nil {
		return nil, err
	}
	if err := CheckPermission(ctx, tp, opts.Now()); err != nil {
		return nil, err
	}
	kv, err := b.State(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock watcher: %w", err)
	}
	filter := []string{bus.AuditSubject(loginType)}
	cons, err := b.Consumer(ctx, opts.Stream, opts.Durable, filter, opts.AckWait, defaultPull*2, 0)
	if err != nil {
		return nil, fmt.Errorf("lock watcher: %w", err)
	}
	log := opts.Log.With().Str("component", "lock").Logger()
	return &Watcher{
		opts:     opts,
		tp:       tp,
		cons:     cons,
		counters: counters{kv: kv, log: log},
		m:        opts.Metrics,
		log:      log,
	}, nil
}

// withDefaults validates o and fills its zero fields.
func (o Options) withDefaults(b *bus.Bus) (Options, error) {
	var errs []error
	if o.Lock.FailedAttemptsCount < 1 {
		errs = append(errs, fmt.Errorf("lock.failed-attempts-count is %d; it must be at least 1", o.Lock.FailedAttemptsCount))
	}
	if o.Lock.Period <= 0 {
		errs = append(errs, fmt.Errorf("lock.period is %s; it must be positive", o.Lock.Period))
	}
	if o.Lock.For < 0 {
		errs = append(errs, fmt.Errorf("lock.for is %s; it must be 0 (until removed) or positive", o.Lock.For))
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("lock watcher: %w", err)
	}
	if o.Stream == "" {
		o.Stream = bus.WithDefaults(b.Cfg).AuditStream
	}
	if o.Durable == "" {
		o.Durable = DefaultDurable
	}
	if o.AckWait <= 0 {
		o.AckWait = defaultAckWait
	}
	if o.RetryBase <= 0 {
		o.RetryBase = defaultRetryBase
	}
	if o.RetryMax <= 0 {
		o.RetryMax = defaultRetryMax
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = defaultStaleAfter
	}
	o.StaleAfter = max(o.StaleAfter, o.Lock.Period)
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// Run handles login events until ctx ends, then finishes the messages
// already pulled and returns nil. It returns an error only when the
// consumer is deleted under it. Failures to lock or to update a counter
// are not returned: the message is handed back to JetStream with a
// growing delay and tried again, logged at error level each time.
func (w *Watcher) Run(ctx context.Context) error {
	it, err := w.cons.Messages(jetstream.PullMaxMessages(defaultPull))
	if err != nil {
		return fmt.Errorf("lock watcher: pull from consumer %q on stream %q: %w", w.opts.Durable, w.opts.Stream, err)
	}
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	defer it.Stop()
	// Messages already pulled are finished after ctx ends, with their own
	// time limits, rather than left to time out.
	hctx := context.WithoutCancel(ctx)
	for {
		msg, err := it.Next()
		switch {
		case err == nil:
			w.handle(hctx, msg)
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return nil
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			return fmt.Errorf("lock watcher: consumer %q on stream %q: %w", w.opts.Durable, w.opts.Stream, err)
		default:
			// Missed heartbeats while NATS reconnects: the iterator
			// recovers by itself.
			w.log.Warn().Err(err).Str("consumer", w.opts.Durable).Msg("pulling login events")
			if err := backoff.Sleep(ctx, 100*time.Millisecond); err != nil {
				return nil
			}
		}
	}
}

// handle counts one login event and locks when it completes a window. The
// message is acknowledged only once its failure is stored and, when due,
// the lock is in place.
func (w *Watcher) handle(ctx context.Context, msg jetstream.Msg) {
	ev, err := bus.ParseMsg(msg.Subject(), msg.Headers(), msg.Data())
	var l login
	if err == nil {
		l, err = parseLogin(ev)
	}
	if err != nil {
		w.m.Skipped.WithLabelValues("malformed").Inc()
		w.log.Error().Err(err).Str("subject", msg.Subject()).Msg("login event not counted: malformed")
		w.settle(msg, msg.Term())
		return
	}
	switch {
	case l.User == "":
		w.m.Skipped.WithLabelValues("no_user").Inc()
		w.log.Debug().Str("event_id", l.ID).Msg("login event without a user, not counted")
		w.settle(msg, msg.Ack())
		return
	case !l.Success && !l.Failed:
		w.m.Skipped.WithLabelValues("no_success").Inc()
		w.log.Debug().Str("event_id", l.ID).Msg("login event without a success field, not counted")
		w.settle(msg, msg.Ack())
		return
	case l.Success && !w.opts.Lock.ResetOnSuccess:
		w.settle(msg, msg.Ack())
		return
	case w.opts.Now().Sub(l.Time) > w.opts.StaleAfter:
		w.m.Skipped.WithLabelValues("stale").Inc()
		w.log.Debug().Str("event_id", l.ID).Time("time", l.Time).Msg("failed login too old to count")
		w.settle(msg, msg.Ack())
		return
	}
	if err := w.count(ctx, l); err != nil {
		w.retry(msg, err, l)
		return
	}
	w.settle(msg, msg.Ack())
}

// count stores the login in its counter and, for a failure that completes
// a window, locks the user and marks the window's failures as locked.
func (w *Watcher) count(ctx context.Context, l login) error {
	key := bus.LockCounterKey(l.User, l.Login)
	n, period := w.opts.Lock.FailedAttemptsCount, w.opts.Lock.Period
	if l.Success {
		_, err := w.updateCounter(ctx, key, func(c *counter) bool { return len(c.Failures) > 0 && c.reset(l.Time) })
		return err
	}
	added := false
	c, err := w.updateCounter(ctx, key, func(c *counter) bool {
		added = c.add(failure{ID: l.ID, Time: l.Time})
		if added {
			c.prune(2 * period)
		}
		return added
	})
	if err != nil {
		return err
	}
	if added {
		w.m.FailedLogins.Inc()
	}
	win, ok := c.due(n, period)
	if !ok {
		return nil
	}
	name := lockName(l.User, l.Login, win)
	lk, err := newLock(name, l.User, l.Login, win, period, w.opts.Lock.For, w.opts.Now())
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	err = w.tp.UpsertLock(cctx, lk)
	cancel()
	if err != nil {
		w.m.Errors.WithLabelValues("upsert_lock").Inc()
		return fmt.Errorf("lock user %q (login %q) as %q: %w", l.User, l.Login, name, err)
	}
	marked := false
	if _, err := w.updateCounter(ctx, key, func(c *counter) bool {
		marked = c.locked(win, name)
		return marked
	}); err != nil {
		return err
	}
	if marked {
		w.m.Locks.Inc()
		ev := w.log.Info().Str("user", l.User).Str("login", l.Login).Str("lock", name).
			Int("failed_logins", len(win.IDs)).Time("first", win.Start).Time("last", win.End)
		if exp := lk.LockExpiry(); exp != nil {
			ev = ev.Time("expires", *exp)
		}
		ev.Msg("user locked after repeated failed logins")
	}
	return nil
}

// updateCounter is counters.update with a time limit, counting failures.
func (w *Watcher) updateCounter(ctx context.Context, key string, change func(*counter) bool) (counter, error) {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	c, err := w.counters.update(ctx, key, change)
	if err != nil {
		w.m.Errors.WithLabelValues("state").Inc()
	}
	return c, err
}

// retry hands msg back to JetStream for redelivery after a backoff delay
// that grows with each delivery, logging the failure at error level.
func (w *Watcher) retry(msg jetstream.Msg, err error, l login) {
	var delivered uint64 = 1
	if md, merr := msg.Metadata(); merr == nil {
		delivered = md.NumDelivered
	}
	delay := w.delay(delivered)
	w.log.Error().Err(err).Str("user", l.User).Str("login", l.Login).Str("event_id", l.ID).
		Uint64("delivery", delivered).Dur("retry_in", delay).Msg("failed login not handled; retrying")
	w.settle(msg, msg.NakWithDelay(delay))
}

// delay is the wait before the next delivery after the delivery-th one
// failed: RetryBase doubled per earlier delivery, capped at RetryMax, drawn
// from [d/2, d] so watchers do not retry in step.
func (w *Watcher) delay(delivery uint64) time.Duration {
	d := w.opts.RetryBase
	for i := uint64(1); i < delivery && d < w.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, w.opts.RetryMax)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// settle logs a failed ack, nak or term: JetStream redelivers the message
// after AckWait and the counter's dedup makes that harmless.
func (w *Watcher) settle(msg jetstream.Msg, err error) {
	if err != nil {
		w.log.Warn().Err(err).Str("subject", msg.Subject()).Msg("acknowledging login event failed; it will be redelivered")
	}
}
