package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

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
type lease struct {
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	log    zerolog.Logger
	rev    uint64

	// seenRev is the revision of the lease entry a standby last read, and
	// seenAt when it first read that revision (this process's clock).
	seenRev uint64
	seenAt  time.Time

	// memory, when set, reports the process's memory into the lease for
	// `ingest status`.
	memory func() *leaseMemory
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
		holder, err := l.try(ctx)
		if err == nil && holder == l.holder {
			l.log.Info().Str("holder", l.holder).Msg("ingest lease acquired: this process reads Teleport")
			return nil
		}
		if err != nil {
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

// keep renews the lease every third of its TTL until ctx ends; it returns
// errLeaseLost when the lease was taken or could not be renewed in time.
func (l *lease) keep(ctx context.Context) error {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		val, _ := l.value()
		rev, err := l.kv.Update(ctx, keyLease, val, l.rev)
		if err == nil {
			l.rev, lastOK = rev, time.Now()
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return errLeaseLost
		}
		if time.Since(lastOK) > l.ttl*2/3 {
			return fmt.Errorf("%w: renewal failing: %v", errLeaseLost, err)
		}
		l.log.Warn().Err(err).Msg("ingest lease renewal failed, retrying")
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
