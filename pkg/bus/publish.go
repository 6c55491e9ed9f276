package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ErrPublisherClosed is reported for publishes attempted after Close, and to
// the callbacks of messages Close abandoned.
var ErrPublisherClosed = errors.New("publisher closed")

// errAckTimeout is the Publisher's own deadline for a PubAck, which also
// covers a JetStream context created without an async ack timeout.
var errAckTimeout = errors.New("no PubAck in time")

// Publisher defaults.
const (
	DefaultMaxInFlight    = 256
	DefaultAckTimeout     = 10 * time.Second
	DefaultPublishRetries = 5
	DefaultRetryBackoff   = 250 * time.Millisecond
	maxRetryBackoff       = 5 * time.Second
)

// PublishDone receives the result of one publish: the PubAck, or the error
// after the retries ran out. An ack with Duplicate set is a success: the
// stream already held the message (Nats-Msg-Id) and kept one copy.
type PublishDone func(ack *jetstream.PubAck, err error)

// PublisherOption changes a Publisher's defaults.
type PublisherOption func(*Publisher)

// WithAckTimeout sets how long to wait for a PubAck before publishing the
// message again (default DefaultAckTimeout).
func WithAckTimeout(d time.Duration) PublisherOption {
	return func(p *Publisher) {
		if d > 0 {
			p.ackTimeout = d
		}
	}
}

// WithRetries sets how many times a message is published before its error
// is reported (attempts, default DefaultPublishRetries) and the first wait
// between attempts, which doubles up to 5 s (default DefaultRetryBackoff).
func WithRetries(attempts int, backoff time.Duration) PublisherOption {
	return func(p *Publisher) {
		if attempts > 0 {
			p.attempts = attempts
		}
		if backoff > 0 {
			p.backoff = backoff
		}
	}
}

// WithPublisherLog logs each retry at warn level.
func WithPublisherLog(log zerolog.Logger) PublisherOption {
	return func(p *Publisher) { p.log = log }
}

// Publisher publishes asynchronously with a bounded number of messages
// awaiting their PubAck, and reports each message's result in publish order,
// from one goroutine. Because results arrive in order, a caller may advance
// a cursor when a callback reports success and every earlier callback did
// too: everything before it is then in the stream.
//
// A timeout, a disconnect, or no JetStream responder is retried with
// backoff, republishing the same message: its Nats-Msg-Id makes the retry
// safe within the stream's duplicate window. Other errors (a message over
// the stream's size limit, say) are reported at once.
//
// Publish may be called from several goroutines. Callbacks must return
// quickly (each one holds up every later result) and must not call Publish:
// a message's slot is freed only after its callback returns.
// Close the Publisher to stop its goroutine.
type Publisher struct {
	js         jetstream.JetStream
	ackTimeout time.Duration
	attempts   int
	backoff    time.Duration
	log        zerolog.Logger

	slots chan struct{} // a token per message between Publish and its callback
	queue chan *pending // in publish order

	pubMu    sync.Mutex // orders publish+enqueue; guards finished
	finished bool

	mu          sync.Mutex
	closed      bool
	outstanding int
	idle        chan struct{} // closed when outstanding drops to 0

	abort     chan struct{} // closed to abandon retries and waiting messages
	abortOnce sync.Once
	stopped   chan struct{} // closed when the delivery goroutine has exited
}

type pending struct {
	msg  *nats.Msg
	paf  jetstream.PubAckFuture
	err  error // a publish that failed before reaching the server
	done PublishDone
}

// NewPublisher starts a Publisher on js allowing maxInFlight messages
// (DefaultMaxInFlight when ≤ 0) between Publish and their result. Keep
// maxInFlight at or below js's async max pending (4000 by default).
func NewPublisher(js jetstream.JetStream, maxInFlight int, opts ...PublisherOption) *Publisher {
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxInFlight
	}
	p := &Publisher{
		js:         js,
		ackTimeout: DefaultAckTimeout,
		attempts:   DefaultPublishRetries,
		backoff:    DefaultRetryBackoff,
		log:        zerolog.Nop(),
		slots:      make(chan struct{}, maxInFlight),
		queue:      make(chan *pending, maxInFlight),
		abort:      make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	for _, o := range opts {
		o(p)
	}
	go p.deliver()
	return p
}

// Publish publishes the event (see NewMsg) and returns once the message is
// sent, blocking while maxInFlight messages await their result. done (may be
// nil) gets the result later. An error return means the event was not
// published and done will not be called: ctx ended while waiting for room,
// or the Publisher is closed.
func (p *Publisher) Publish(ctx context.Context, e Event, done PublishDone) error {
	return p.PublishMsg(ctx, NewMsg(e), done)
}

// PublishMsg is Publish for a message built by the caller (a dead letter,
// say). m must not be changed afterwards and must have no Reply subject.
func (p *Publisher) PublishMsg(ctx context.Context, m *nats.Msg, done PublishDone) error {
	if err := p.begin(); err != nil {
		return err
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		p.end()
		return fmt.Errorf("publish to %s: %w", m.Subject, ctx.Err())
	case <-p.abort:
		p.end()
		return ErrPublisherClosed
	}
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	if p.finished {
		<-p.slots
		p.end()
		return ErrPublisherClosed
	}
	pd := &pending{msg: m, done: done}
	pd.paf, pd.err = p.js.PublishMsgAsync(m, jetstream.WithStallWait(p.ackTimeout))
	p.queue <- pd // never blocks: the queue holds at most one entry per slot
	return nil
}

// Pending is the number of messages published or waiting to be, whose
// result has not been reported yet.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outstanding
}

// Flush waits until every message published so far has had its result
// reported, or ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	if p.outstanding == 0 {
		p.mu.Unlock()
		return nil
	}
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush publisher (%d messages awaiting PubAck): %w", p.Pending(), ctx.Err())
	}
}

// Close stops accepting messages, waits for outstanding results until ctx
// ends, then reports ErrPublisherClosed to the callbacks of any message still
// unresolved and stops the Publisher's goroutine. It returns Flush's error.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.Flush(ctx)
	p.abortOnce.Do(func() { close(p.abort) })
	<-p.stopped
	return err
}

func (p *Publisher) begin() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPublisherClosed
	}
	if p.outstanding == 0 {
		p.idle = make(chan struct{})
	}
	p.outstanding++
	return nil
}

func (p *Publisher) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outstanding--
	if p.outstanding == 0 {
		close(p.idle)
	}
}

// deliver reports results in queue order until the Publisher is aborted.
func (p *Publisher) deliver() {
	defer close(p.stopped)
	for {
		select {
		case pd := <-p.queue:
			ack, err := p.await(pd)
			p.report(pd, ack, err)
		case <-p.abort:
			p.pubMu.Lock()
			p.finished = true
			p.pubMu.Unlock()
			for {
				select {
				case pd := <-p.queue:
					p.report(pd, nil, ErrPublisherClosed)
				default:
					return
				}
			}
		}
	}
}

func (p *Publisher) report(pd *pending, ack *jetstream.PubAck, err error) {
	if pd.done != nil {
		pd.done(ack, err)
	}
	<-p.slots
	p.end()
}

// await waits for pd's PubAck, republishing on errors worth retrying.
func (p *Publisher) await(pd *pending) (*jetstream.PubAck, error) {
	wait := p.backoff
	for attempt := 1; ; attempt++ {
		ack, err := p.result(pd)
		if err == nil {
			return ack, nil
		}
		if errors.Is(err, ErrPublisherClosed) {
			return nil, err
		}
		if !retryable(err) || attempt >= p.attempts {
			return nil, fmt.Errorf("publish %s to %s (attempt %d): %w", pd.msg.Header.Get(HeaderMsgID), pd.msg.Subject, attempt, err)
		}
		p.log.Warn().Err(err).Str("subject", pd.msg.Subject).Str("msg_id", pd.msg.Header.Get(HeaderMsgID)).
			Int("attempt", attempt).Dur("retry_in", wait).Msg("publish failed, retrying")
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.abort:
			t.Stop()
			return nil, ErrPublisherClosed
		}
		wait = min(2*wait, maxRetryBackoff)
		pd.paf, pd.err = p.js.PublishMsgAsync(pd.msg, jetstream.WithStallWait(p.ackTimeout))
	}
}

// result waits for one attempt's outcome.
func (p *Publisher) result(pd *pending) (*jetstream.PubAck, error) {
	if pd.err != nil {
		return nil, pd.err
	}
	t := time.NewTimer(p.ackTimeout)
	defer t.Stop()
	select {
	case ack := <-pd.paf.Ok():
		return ack, nil
	case err := <-pd.paf.Err():
		return nil, err
	case <-t.C:
		return nil, errAckTimeout
	case <-p.abort:
		return nil, ErrPublisherClosed
	}
}

// retryable reports errors that another attempt may cure.
func retryable(err error) bool {
	switch {
	case errors.Is(err, errAckTimeout),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 503 {
		return true // JetStream temporarily unavailable (leader election)
	}
	return false
}
