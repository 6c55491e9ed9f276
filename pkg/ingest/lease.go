package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// keyLease is the state key of the lease.
const keyLease = bus.LeaseKey

// defaultLeaseTTL lets a standby take over within 15 s of the leader's
// death: the lease runs out after at most this long, and the standby
// checks every leasePoll.
const (
	defaultLeaseTTL = 10 * time.Second
	leasePoll       = time.Second
)

// errLeaseLost is returned when another process took the lease.
var errLeaseLost = errors.New("ingest lease lost to another process")

// lease makes one ingest process the reader among several sharing a
// bus: the holder writes its id into the state bucket and renews it every
// third of the TTL; others wait until it is released, or until the entry
// has not changed for a whole TTL by their own clock. Clocks of different
// hosts are never compared: a standby whose clock runs ahead must not take
// over from a leader that is alive. Writes use the entry's revision, so two
// processes cannot both win.
//
// A renewal that fails because the bucket cannot be written — its stream
// has no leader while NATS elects one after a node loss, the connection is
// reconnecting, a request timed out — is not a lost lease: the holder keeps
// it and tries again every leasePoll, until a renewal lands or the entry
// provably belongs to another process (a revision check fails and the
// entry names another holder). Holding is safe because a standby takes
// over only after seeing the entry unchanged for a whole TTL, by its own
// clock, in polls that each reached the bucket's leader (every poll starts
// with a write; a poll that fails starts its count over): while the
// bucket has no leader, no standby's count runs, and once it has one
// again, the holder's next renewal, at most a leasePoll later, changes the
// entry. A standby can therefore only take over from a holder that could
// not write to a working bucket for a whole TTL: one that died, or one cut
// off from the bucket's leader while the standby is not (a partition).
// For that last case the holder also pauses its publishing (gate) once
// its last renewal is older than two thirds of the TTL, and resumes when a
// renewal lands: by the time a standby could take over, the cut-off holder
// publishes nothing new, so two readers never publish side by side. The
// Nats-Msg-Id duplicate window (5 s by default) would not cover that:
// floors make a restart or a retry of one writer exactly-once, but a
// second writer's scan cannot see what the first publishes after it.
// During a leader election the pause costs nothing beyond the election
// itself (publishing waits for the streams' leaders too), plus a
// leasePoll at most.
type lease struct {
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	log    zerolog.Logger
	rev    uint64

	// seenRev is the revision of the lease entry a standby last read, and
	// seenAt when it first read that revision (this process's clock); 0
	// after a poll that could not reach the bucket.
	seenRev uint64
	seenAt  time.Time

	// memory, when set, reports the process's memory into the lease for
	// `ingest status`.
	memory func() *leaseMemory

	// mu guards renewed (when the write of the holder's latest successful
	// renewal was sent) and fresh (closed while the lease is fresh, see
	// gate; replaced when it goes stale).
	mu      sync.Mutex
	renewed time.Time
	fresh   chan struct{}
	paused  bool // gate logged a pause that no renewal has ended yet
}

// leaseValue is the stored lease. Expires is the holder's idea of when the
// lease runs out, for people reading the bucket (`ingest status`); TTL is
// its lease TTL, so a standby configured with a shorter one still waits
// long enough.
type leaseValue struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
	TTL     string    `json:"ttl,omitempty"`
	// Memory is the holder's memory when it last renewed (memory.go).
	Memory *leaseMemory `json:"memory,omitempty"`
}

// newLease describes this process as a lease holder.
func newLease(kv jetstream.KeyValue, ttl time.Duration, log zerolog.Logger) *lease {
	if ttl <= 0 {
		ttl = defaultLeaseTTL
	}
	host, _ := os.Hostname()
	id := fmt.Sprintf("%s/%d/%s", host, os.Getpid(), strconv.FormatInt(time.Now().UnixNano(), 36))
	return &lease{kv: kv, holder: id, ttl: ttl, log: log}
}

// acquire waits until this process holds the lease.
func (l *lease) acquire(ctx context.Context) error {
	logged := false
	t := time.NewTicker(leasePoll)
	defer t.Stop()
	for {
		sent := time.Now()
		holder, err := l.try(ctx)
		if err == nil && holder == l.holder {
			l.markRenewed(sent)
			l.log.Info().Str("holder", l.holder).Msg("ingest lease acquired: this process reads Teleport")
			return nil
		}
		if err != nil {
			// Count a whole TTL again from the next poll that reaches the
			// bucket: while it has no leader, the holder cannot renew.
			l.seenRev = 0
			l.log.Warn().Err(err).Msg("ingest lease: cannot read or write the lease, retrying")
		} else if !logged {
			l.log.Info().Str("leader", holder).Msg("another ingest holds the lease: standing by")
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// try takes the lease if it is free or expired and returns its holder.
func (l *lease) try(ctx context.Context) (string, error) {
	val, err := l.value()
	if err != nil {
		return "", err
	}
	rev, err := l.kv.Create(ctx, keyLease, val)
	if err == nil {
		l.rev = rev
		return l.holder, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return "", fmt.Errorf("create lease: %w", err)
	}
	e, err := l.kv.Get(ctx, keyLease)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read lease: %w", err)
	}
	var cur leaseValue
	if err := json.Unmarshal(e.Value(), &cur); err != nil {
		cur = leaseValue{} // unreadable: no holder to wait for
	}
	if cur.Holder != "" && cur.Holder != l.holder && !l.stale(e.Revision(), cur) {
		return cur.Holder, nil
	}
	rev, err = l.kv.Update(ctx, keyLease, val, e.Revision())
	if err != nil {
		return cur.Holder, nil // someone else got it first
	}
	l.rev = rev
	return l.holder, nil
}

// value is the lease entry this process writes.
func (l *lease) value() ([]byte, error) {
	v := leaseValue{Holder: l.holder, Expires: time.Now().Add(l.ttl), TTL: l.ttl.String()}
	if l.memory != nil {
		v.Memory = l.memory()
	}
	return json.Marshal(v)
}

// stale reports whether the lease entry, now at revision rev, has not
// changed for a whole TTL (the longer of the holder's and ours) as this
// process's clock measures it: its holder stopped renewing.
func (l *lease) stale(rev uint64, cur leaseValue) bool {
	now := time.Now()
	if rev != l.seenRev {
		l.seenRev, l.seenAt = rev, now
		return false
	}
	ttl := l.ttl
	if d, err := time.ParseDuration(cur.TTL); err == nil && d > ttl {
		ttl = d
	}
	return now.Sub(l.seenAt) >= ttl
}

// keep renews the lease every third of its TTL until ctx ends. A renewal
// that fails for want of a working bucket is tried again every leasePoll
// while the lease is held (see lease); keep returns errLeaseLost only when
// the entry names another holder.
func (l *lease) keep(ctx context.Context) error {
	t := time.NewTimer(l.ttl / 3)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		err := l.renew(ctx)
		switch {
		case err == nil:
			if failing {
				l.log.Info().Msg("ingest lease renewed: the state bucket answers again")
			}
			failing = false
			t.Reset(l.ttl / 3)
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errLeaseLost):
			return err
		}
		ev := l.log.Debug()
		if !failing {
			ev = l.log.Warn()
		}
		ev.Err(err).Dur("since_renewal", l.sinceRenewal().Round(time.Millisecond)).
			Msgf("state bucket has no leader or cannot be reached; holding the lease, renewing again in %s", leasePoll)
		failing = true
		t.Reset(leasePoll)
	}
}

// renew writes the lease entry over the revision this process wrote last.
// A revision mismatch is errLeaseLost only when the entry names another
// holder: when it names this one, the previous renewal landed although
// its answer was lost, and its revision is taken.
func (l *lease) renew(ctx context.Context) error {
	val, err := l.value()
	if err != nil {
		return err
	}
	sent := time.Now()
	rev, err := l.kv.Update(ctx, keyLease, val, l.rev)
	if err == nil {
		l.rev = rev
		l.markRenewed(sent)
		return nil
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		return fmt.Errorf("renew lease: %w", err)
	}
	e, gerr := l.kv.Get(ctx, keyLease)
	if errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted) {
		return fmt.Errorf("%w: its entry was removed from the state bucket", errLeaseLost)
	}
	if gerr != nil {
		return fmt.Errorf("renew lease: revision %d is not the latest, and reading the entry failed: %w", l.rev, gerr)
	}
	var cur leaseValue
	if jerr := json.Unmarshal(e.Value(), &cur); jerr == nil && cur.Holder == l.holder {
		if e.Revision() == l.rev {
			// A follower's stale answer: not another's, try again.
			return fmt.Errorf("renew lease: revision %d refused as not the latest, though it still is: %w", l.rev, err)
		}
		l.rev = e.Revision()
		return l.renew(ctx)
	}
	return fmt.Errorf("%w: the state bucket names %q as its holder", errLeaseLost, cur.Holder)
}

// markRenewed records a renewal whose write was sent at sent, and opens
// the gate; a pause ends with its log line before the first publish goes
// through.
func (l *lease) markRenewed(sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent.After(l.renewed) {
		l.renewed = sent
	}
	if l.paused {
		l.paused = false
		l.log.Info().Msg("ingest lease renewed: publishing resumed")
	}
	if l.fresh == nil {
		l.fresh = make(chan struct{})
	}
	select {
	case <-l.fresh:
	default:
		close(l.fresh)
	}
}

// sinceRenewal is how long ago the latest successful renewal was sent.
func (l *lease) sinceRenewal() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.renewed)
}

// staleAfter is how old the latest renewal may be while the holder
// publishes: a standby takes over a whole TTL after it at the earliest.
func (l *lease) staleAfter() time.Duration { return l.ttl * 2 / 3 }

// gate returns at once while the lease is fresh (its latest renewal was
// sent less than two thirds of a TTL ago) and otherwise waits until a
// renewal lands or ctx ends: a holder cut off from the state bucket stops
// publishing before a standby could take over (see lease). The publishers
// call it before every publish.
func (l *lease) gate(ctx context.Context) error {
	l.mu.Lock()
	age := time.Since(l.renewed)
	if age < l.staleAfter() {
		l.mu.Unlock()
		return nil
	}
	fresh := l.fresh
	select {
	case <-fresh:
		fresh = make(chan struct{})
		l.fresh, l.paused = fresh, true
		l.log.Warn().Dur("since_renewal", age.Round(time.Millisecond)).
			Msg("ingest lease not renewed for two thirds of its TTL (the state bucket has no leader or cannot be reached): publishing paused until it is")
	default:
	}
	l.mu.Unlock()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-fresh:
		return nil
	}
}

// release gives the lease up so a standby takes over at once.
func (l *lease) release(ctx context.Context) {
	if l.rev == 0 {
		return
	}
	if err := l.kv.Delete(ctx, keyLease, jetstream.LastRevision(l.rev)); err != nil {
		l.log.Debug().Err(err).Msg("ingest lease release failed; it expires on its own")
	}
}
