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
	DefaultMaxInFlight    = 2048
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
// before a retry round (default DefaultRetryBackoff). The wait doubles with
// each round up to 5 s, and starts over once a PubAck arrives.
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

// WithTailCheck makes the Publisher independent of the duplicate window
// for its own retries. streamOf names the stream a subject is stored in
// ("" when none of last's), and last holds each stream's last sequence
// when the Publisher starts. The Publisher then remembers, for every
// message, the highest sequence acknowledged in its stream when the
// message was first published (Floor): the message, if stored at all, is
// stored after it. Before a retry round it reads the stream's headers
// after that floor (ScanTail) and reports the messages found there as
// acknowledged duplicates instead of publishing them again, so a message
// whose PubAck was lost is stored once even when the retry comes after
// the window. A round whose scan fails publishes nothing and counts as an
// attempt.
func WithTailCheck(streamOf func(subject string) string, last map[string]uint64) PublisherOption {
	return func(p *Publisher) {
		p.streamOf = streamOf
		p.floors = map[string]uint64{}
		for k, v := range last {
			p.floors[k] = v
		}
	}
}

// WithPace makes Publish wait, before a message is sent, until pace
// allows its StoredSize: the bytes stored per ServerCacheWindow stay
// within pace's limit (an embedded server's memory budget). A nil pace
// does nothing.
func WithPace(pace *WritePace) PublisherOption {
	return func(p *Publisher) { p.pace = pace }
}

// PublishWait is what a publish waited for before its message was sent
// (WithWaitObserver).
type PublishWait string

// The waits of a publish.
const (
	// WaitPace is the wait for WithPace's pace: the bytes stored in the
	// server's cache window were at the memory budget's limit.
	WaitPace PublishWait = "write_pace"
	// WaitInFlight is the wait for a free slot: maxInFlight messages
	// awaited their PubAck.
	WaitInFlight PublishWait = "in_flight"
)

// WithWaitObserver calls observe with each wait of a publish before its
// message was sent, and how long it was; a publish that did not wait is
// not reported. observe is called from the publishing goroutine and must
// be quick and safe for concurrent use.
func WithWaitObserver(observe func(PublishWait, time.Duration)) PublisherOption {
	return func(p *Publisher) { p.observe = observe }
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
// safe within the stream's duplicate window. Messages that failed together
// (acks that timed out during a stream leader election, a reconnect) are
// published again together, in one round after one backoff. Other errors
// (a message over the stream's size limit, say, or no room: see NoRoom)
// are reported at once.
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

	// streamOf and floors are WithTailCheck's: floors holds the highest
	// sequence acknowledged per stream (floorMu).
	streamOf func(subject string) string
	floorMu  sync.Mutex
	floors   map[string]uint64

	pace    *WritePace                       // WithPace's; nil: no pacing
	observe func(PublishWait, time.Duration) // WithWaitObserver's; nil: none

	// ackTimer bounds settle's wait; owned by the delivery goroutine and
	// reset for each message rather than made anew (a timer per message
	// was 3% of a backfill's allocations).
	ackTimer *time.Timer

	abort     chan struct{} // closed to abandon retries and waiting messages
	abortOnce sync.Once
	stopped   chan struct{} // closed when the delivery goroutine has exited
}

// pending is one message between Publish and its callback, with the outcome
// of its latest attempt once that is known.
type pending struct {
	msg     *nats.Msg
	done    PublishDone
	paf     jetstream.PubAckFuture // nil when the attempt failed before reaching the server
	sent    time.Time              // when the latest attempt was published
	attempt int                    // attempts published so far
	ack     *jetstream.PubAck      // the latest attempt's PubAck, once it came
	failure error                  // the latest attempt's error, once it came
	stream  string                 // WithTailCheck: the stream it is stored in
	floor   uint64                 // WithTailCheck: Floor(stream) when first published
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
	if err := p.paced(ctx, m); err != nil {
		p.end()
		return err
	}
	if err := p.slot(ctx, m); err != nil {
		p.end()
		return err
	}
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	if p.finished {
		<-p.slots
		p.end()
		return ErrPublisherClosed
	}
	pd := &pending{msg: m, done: done}
	if p.streamOf != nil {
		pd.stream = p.streamOf(m.Subject)
		pd.floor = p.Floor(pd.stream)
	}
	p.send(pd)
	p.queue <- pd // never blocks: the queue holds at most one entry per slot
	return nil
}

// slot takes a slot for m, waiting while maxInFlight messages await their
// result.
func (p *Publisher) slot(ctx context.Context, m *nats.Msg) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	defer p.waited(WaitInFlight, time.Now())
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish to %s: %w", m.Subject, ctx.Err())
	case <-p.abort:
		return ErrPublisherClosed
	}
}

// waited reports a wait of kind that began at since to WithWaitObserver's
// observer.
func (p *Publisher) waited(kind PublishWait, since time.Time) {
	if p.observe != nil {
		p.observe(kind, time.Since(since))
	}
}

// paceRecheck bounds each wait on the pace before it is asked again: room
// may come sooner than the window promised, when memory stops being short
// (WritePace.WhenPressed).
const paceRecheck = 100 * time.Millisecond

// paced waits until WithPace's pace lets m be sent.
func (p *Publisher) paced(ctx context.Context, m *nats.Msg) error {
	if p.pace == nil {
		return nil
	}
	size := StoredSize(m)
	d := p.pace.reserve(size)
	if d <= 0 {
		return nil
	}
	defer p.waited(WaitPace, time.Now())
	t := time.NewTimer(min(d, paceRecheck))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("publish to %s: waiting for room in the server's block caches (%d bytes per %s): %w", m.Subject, p.pace.Limit(), ServerCacheWindow, ctx.Err())
		case <-p.abort:
			return ErrPublisherClosed
		}
		if d = p.pace.reserve(size); d <= 0 {
			return nil
		}
		t.Reset(min(d, paceRecheck))
	}
}

// Floor is the highest sequence acknowledged in stream so far (with
// WithTailCheck; 0 without, or for a stream it does not know): a message
// published from now on is stored, if at all, after it.
func (p *Publisher) Floor(stream string) uint64 {
	p.floorMu.Lock()
	defer p.floorMu.Unlock()
	return p.floors[stream]
}

// raiseFloor records a PubAck for Floor.
func (p *Publisher) raiseFloor(ack *jetstream.PubAck) {
	if p.streamOf == nil || ack == nil {
		return
	}
	p.floorMu.Lock()
	if ack.Sequence > p.floors[ack.Stream] {
		p.floors[ack.Stream] = ack.Sequence
	}
	p.floorMu.Unlock()
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

// deliver reports results in publish order until the Publisher is aborted.
//
// It waits on the oldest message only. When that one fails in a way worth
// retrying, every message whose attempt has failed or timed out by then is
// published again in one round, after one backoff: after a stream leader
// change or a reconnect all of them failed for the same reason, and
// retrying them one by one would cost a backoff and an ack wait each.
func (p *Publisher) deliver() {
	defer close(p.stopped)
	var window []*pending // taken from the queue, not yet reported, in publish order
	wait := p.backoff
	for {
		if len(window) == 0 {
			select {
			case pd := <-p.queue:
				window = append(window, pd)
			case <-p.abort:
				p.abandon(window)
				return
			}
		}
		head := window[0]
		if !p.settle(head) {
			p.abandon(window)
			return
		}
		if p.final(head) {
			if head.ack != nil {
				wait = p.backoff // the stream answers again
				p.raiseFloor(head.ack)
			}
			ack, err := p.result(head)
			p.report(head, ack, err)
			window[0] = nil
			window = window[1:]
			continue
		}
		failed, cause := head.attempt, head.failure
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.abort:
			t.Stop()
			p.abandon(window)
			return
		}
		window = p.drain(window)
		due := p.due(window)
		p.log.Warn().Err(cause).Str("subject", head.msg.Subject).Str("msg_id", head.msg.Header.Get(HeaderMsgID)).
			Int("attempt", failed).Int("messages", len(due)).Dur("after", wait).Msg("publish failed, retrying")
		due = p.recheck(due)
		for _, pd := range due {
			p.send(pd)
		}
		wait = min(2*wait, maxRetryBackoff)
	}
}

// recheck is WithTailCheck's look at the streams before a retry round:
// the messages of due found in their stream get a duplicate PubAck with
// the sequence found and are not published again; the others are
// returned. When a stream cannot be read now, its messages are not
// published this round: each counts an attempt and keeps its failure.
func (p *Publisher) recheck(due []*pending) []*pending {
	if p.streamOf == nil || len(due) == 0 {
		return due
	}
	type group struct {
		floor uint64
		want  map[string]*pending
	}
	groups := map[string]*group{}
	for _, pd := range due {
		if pd.stream == "" {
			continue
		}
		g := groups[pd.stream]
		if g == nil {
			g = &group{floor: pd.floor, want: map[string]*pending{}}
			groups[pd.stream] = g
		}
		g.floor = min(g.floor, pd.floor)
		g.want[pd.msg.Header.Get(HeaderMsgID)] = pd
	}
	unread := map[*pending]bool{}
	for stream, g := range groups {
		// The scan starts once the stream answers: one sent while its
		// leader is elected would wait the whole timeout (WaitStream).
		ctx, cancel := context.WithTimeout(context.Background(), p.ackTimeout)
		err := WaitStream(ctx, p.js, stream)
		cancel()
		found, n := 0, 0
		if err == nil {
			ctx, cancel = context.WithTimeout(context.Background(), p.ackTimeout)
			n, err = ScanTail(ctx, p.js, stream, g.floor, func(id string, seq uint64) {
				if pd, ok := g.want[id]; ok && pd.ack == nil {
					pd.ack = &jetstream.PubAck{Stream: stream, Sequence: seq, Duplicate: true}
					pd.failure = nil
					found++
				}
			})
			cancel()
		}
		if err != nil {
			p.log.Warn().Err(err).Str("stream", stream).Int("messages", len(g.want)).
				Msg("cannot read the stream to see which messages to publish again; not publishing them this round")
			for _, pd := range g.want {
				if pd.ack == nil {
					unread[pd] = true
					pd.attempt++
				}
			}
			continue
		}
		if found > 0 {
			p.log.Info().Str("stream", stream).Int("found", found).Int("read", n).Uint64("after_seq", g.floor).
				Msg("messages whose PubAck was lost are in the stream: not published again")
		}
	}
	var out []*pending // in publish order
	for _, pd := range due {
		if pd.ack == nil && !unread[pd] {
			out = append(out, pd)
		}
	}
	return out
}

// send publishes pd's next attempt.
func (p *Publisher) send(pd *pending) {
	pd.attempt++
	pd.sent = time.Now()
	pd.ack = nil
	pd.paf, pd.failure = p.js.PublishMsgAsync(pd.msg, jetstream.WithStallWait(p.ackTimeout))
}

// drain moves the messages published since to the end of window.
func (p *Publisher) drain(window []*pending) []*pending {
	for {
		select {
		case pd := <-p.queue:
			window = append(window, pd)
		default:
			return window
		}
	}
}

// due returns the messages in window whose latest attempt failed or timed
// out and may be retried. The others keep waiting for their PubAck, or keep
// their result.
func (p *Publisher) due(window []*pending) []*pending {
	now := time.Now()
	var due []*pending
	for _, pd := range window {
		p.poll(pd, now)
		if pd.failure != nil && !p.final(pd) {
			due = append(due, pd)
		}
	}
	return due
}

// settle waits for the outcome of pd's latest attempt; false means the
// Publisher was aborted first.
func (p *Publisher) settle(pd *pending) bool {
	if pd.ack != nil || pd.failure != nil {
		return true
	}
	wait := time.Until(pd.sent.Add(p.ackTimeout))
	if p.ackTimer == nil {
		p.ackTimer = time.NewTimer(wait)
	} else {
		p.ackTimer.Reset(wait) // stopped below: no stale expiry (Go ≥ 1.23)
	}
	defer p.ackTimer.Stop()
	select {
	case pd.ack = <-pd.paf.Ok():
	case pd.failure = <-pd.paf.Err():
	case <-p.ackTimer.C:
		pd.failure = errAckTimeout
	case <-p.abort:
		return false
	}
	return true
}

// poll records the outcome of pd's latest attempt if it is known by now,
// without waiting.
func (p *Publisher) poll(pd *pending, now time.Time) {
	if pd.ack != nil || pd.failure != nil {
		return
	}
	select {
	case pd.ack = <-pd.paf.Ok():
	case pd.failure = <-pd.paf.Err():
	default:
		if !now.Before(pd.sent.Add(p.ackTimeout)) {
			pd.failure = errAckTimeout
		}
	}
}

// final reports whether pd's result is known for good: acked, failed in a
// way no retry cures, or out of attempts.
func (p *Publisher) final(pd *pending) bool {
	switch {
	case pd.ack != nil:
		return true
	case pd.failure == nil:
		return false
	}
	return !retryable(pd.failure) || pd.attempt >= p.attempts
}

// result is the result of a final pd, as its callback gets it.
func (p *Publisher) result(pd *pending) (*jetstream.PubAck, error) {
	if pd.ack != nil {
		return pd.ack, nil
	}
	return nil, fmt.Errorf("publish %s to %s (attempt %d): %w", pd.msg.Header.Get(HeaderMsgID), pd.msg.Subject, pd.attempt, pd.failure)
}

// abandon reports the messages still waiting, in publish order, after
// Publish has been shut: their result if it is final, ErrPublisherClosed
// otherwise.
func (p *Publisher) abandon(window []*pending) {
	p.pubMu.Lock()
	p.finished = true
	p.pubMu.Unlock()
	for _, pd := range p.drain(window) {
		if !p.final(pd) {
			p.report(pd, nil, ErrPublisherClosed)
			continue
		}
		ack, err := p.result(pd)
		p.report(pd, ack, err)
	}
}

func (p *Publisher) report(pd *pending, ack *jetstream.PubAck, err error) {
	if pd.done != nil {
		pd.done(ack, err)
	}
	// The count drops before the slot is freed, so a Publish that takes
	// the slot never sees Pending above maxInFlight (the race detector's
	// scheduling showed 17 of 16 in TestPublisherRealServer).
	p.end()
	<-p.slots
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
	if _, full := NoRoom(err); full {
		return false // no room: reported at once, the caller pauses
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 503 {
		return true // JetStream temporarily unavailable (leader election)
	}
	return false
}
