package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
)

// recoveryState is the RecoveryKey value: a recovery the next runs
// finish.
type recoveryState struct {
	Started time.Time `json:"started"`
	Reason  string    `json:"reason,omitempty"`
}

// Recover is `ingest recover`: after a stream was lost, recreated or cut
// short (ErrStreamLost), it resets ingest's positions so the next run reads
// every date again from start-time and streams every recording again, and
// marks the recovery so that run first learns which events the streams
// still hold (by Nats-Msg-Id) and publishes only the others: exactly once
// on the bus, however old the events. The start time, the lock counters
// and the lease are kept. No ingest may be running: with the embedded
// server it opens the storage directory itself, and with a NATS cluster it
// refuses while an ingest holds the lease. It writes what it did to w.
func Recover(ctx context.Context, cfg *config.Config, log zerolog.Logger, w io.Writer) error {
	b, st, err := openIdle(ctx, cfg, log, "ingest-recover")
	if err != nil {
		return err
	}
	defer b.Close()
	var found []string
	for _, name := range guardedStreams(b.Cfg) {
		var m streamMark
		ok, err := st.Get(bus.StreamMarkKey(name), &m)
		if err != nil {
			return err
		}
		pos, err := hasPositions(st, name, b.Cfg)
		if err != nil {
			return err
		}
		var mark *streamMark
		if ok {
			mark = &m
		}
		err = compare(ctx, b.StreamInfo, name, mark, 0, pos, cfg.File)
		var lost *streamLostError
		switch {
		case err == nil:
		case errors.As(err, &lost):
			found = append(found, lost.what)
		default:
			return err
		}
	}
	reason := strings.Join(found, "; ")
	if reason == "" {
		reason = "requested; no stream was found lost"
	}
	if err := st.Put(ctx, bus.RecoveryKey, recoveryState{Started: time.Now().UTC(), Reason: reason}); err != nil {
		return err
	}
	n := 0
	for _, prefix := range []string{position.PrefixChunk, position.PrefixDate, position.KeySearch, position.PrefixSession, position.PrefixMark} {
		for _, k := range st.Keys(prefix) {
			if err := st.Purge(ctx, k); err != nil {
				return err
			}
			n++
		}
	}
	var start position.Start
	if _, err := st.Get(position.KeyStartTime, &start); err != nil {
		return err
	}
	log.Info().Str("found", reason).Int("positions_reset", n).Msg("recovery prepared")
	_, err = fmt.Fprintf(w, "Found: %s.\nReset %d saved positions; the start time (%s) is kept.\n"+
		"Start ingest as usual: it reads every date again from the start time and publishes only the events the streams no longer hold.\n",
		reason, n, start.StartTime.UTC().Format(time.RFC3339))
	return err
}

// refuseWhileLeased is an error while another process holds the ingest
// lease: a recovery under a running ingest would race its positions.
func refuseWhileLeased(st *position.Store, now time.Time) error {
	raw, ok := st.Raw(keyLease)
	var lv leaseValue
	if !ok || json.Unmarshal(raw, &lv) != nil || lv.Holder == "" || now.After(lv.Expires) {
		return nil
	}
	return fmt.Errorf("ingest %s holds the lease until %s: stop every ingest before `ingest recover`",
		lv.Holder, lv.Expires.UTC().Format(time.RFC3339))
}

// skipSet is the Nats-Msg-Ids the streams held when a recovering run
// started: those events are on the bus already and are not published
// again. It is dropped once the recovery is finished.
type skipSet struct {
	mu  sync.RWMutex
	ids map[string]struct{} // nil: not recovering
}

// has reports whether id is on the bus already.
func (s *skipSet) has(id string) bool {
	if s == nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.ids[id]
	return ok
}

// active reports whether a recovery is under way.
func (s *skipSet) active() bool {
	if s == nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ids != nil
}

// drop forgets the ids.
func (s *skipSet) drop() {
	s.mu.Lock()
	s.ids = nil
	s.mu.Unlock()
}

// loadRecovery returns the ids the streams hold when st marks a recovery
// under way (an empty, inactive set otherwise), reading every message's
// headers once.
func loadRecovery(ctx context.Context, b *bus.Bus, st *position.Store, log zerolog.Logger) (*skipSet, error) {
	var rs recoveryState
	ok, err := st.Get(bus.RecoveryKey, &rs)
	if err != nil || !ok {
		return &skipSet{}, err
	}
	ids := map[string]struct{}{}
	for _, name := range guardedStreams(b.Cfg) {
		n, err := b.ScanMsgIDs(ctx, name, func(id string) { ids[id] = struct{}{} })
		if err != nil {
			return nil, err
		}
		log.Info().Str("stream", name).Int("messages", n).Msg("recovering: events still in the stream are not published again")
	}
	return &skipSet{ids: ids}, nil
}

// openIdle opens the bus as name and the state, for a command that changes
// positions and so may run only while no ingest holds the lease (Recover,
// Backfill). The caller closes the bus.
func openIdle(ctx context.Context, cfg *config.Config, log zerolog.Logger, name string) (*bus.Bus, *position.Store, error) {
	b, err := bus.Open(ctx, cfg.NATS, cfg.Storage, name, log, true)
	if err != nil {
		return nil, nil, err
	}
	st, err := openIdleState(ctx, b)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return b, st, nil
}

func openIdleState(ctx context.Context, b *bus.Bus) (*position.Store, error) {
	kv, err := b.State(ctx)
	if err != nil {
		return nil, err
	}
	st, err := position.Open(ctx, kv, b.Cfg.StateBucket)
	if err != nil {
		return nil, err
	}
	return st, refuseWhileLeased(st, time.Now())
}
