package ingest

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/reader"
)

// defaultPoll is the poll interval when caught up and timeout is unset.
const defaultPoll = 5 * time.Second

// pruneEvery is how often finished session jobs are looked for.
const pruneEvery = time.Hour

// run reads until ctx ends or, with exit-on-last-event, until caught up
// with every event acknowledged and every recording job finished. Beside
// the passes run the recording jobs, the progress report, the guard's
// watch and the loss watcher.
func (p *pipeline) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := p.sessions.Run(gctx, cmp.Or(p.cfg.Ingest.SessionConcurrency, concurrency(p.cfg)))
		if gctx.Err() != nil {
			return nil
		}
		return err
	})
	g.Go(func() error { return p.prog.run(gctx, p.cfg.Ingest.ProgressInterval) })
	if p.guard != nil {
		g.Go(func() error { return p.guard.watch(gctx) })
	}
	if p.loss != nil {
		g.Go(func() error { return p.loss.run(gctx) })
	}
	g.Go(func() error {
		defer cancel()
		err := p.passes(gctx)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil
		}
		return err
	})
	return g.Wait()
}

// passes runs passes over the audit log: the bulk export API first, search
// paging if the server lacks it (or --cursor or an earlier run chose it).
// Transient errors are retried with backoff, forever.
func (p *pipeline) passes(ctx context.Context) error {
	useSearch := p.search.Pos.Saved()
	switch {
	case p.cfg.Cursor != "":
		useSearch = true
		p.log.Info().Str("cursor", p.cfg.Cursor).Int("page_size", p.search.PageSize).Msg("reading the audit log with SearchUnstructuredEvents from the given cursor")
	case useSearch:
		p.log.Info().Int("page_size", p.search.PageSize).Msg("reading the audit log with SearchUnstructuredEvents paging (chosen by an earlier run)")
	default:
		p.log.Info().Time("start_time", p.start).Msg("reading the audit log with the bulk export API")
	}
	poll := p.cfg.Timeout
	if poll <= 0 {
		poll = defaultPoll
	}
	b := backoff.Backoff{Policy: backoff.Reconnect}
	for {
		var err error
		began := time.Now()
		if err := p.guard.check(ctx); err != nil {
			return err
		}
		if useSearch {
			err = p.search.Pass(ctx, time.Now().UTC())
		} else {
			err = p.export.Pass(ctx, time.Now().UTC())
		}
		switch {
		case err == nil:
			b.Reset()
			if err := p.finishRecovery(ctx); err != nil {
				p.log.Warn().Err(err).Msg("finishing the recovery failed; trying again after the next pass")
			}
			p.prune(ctx)
			if p.cfg.ExitOnLastEvent {
				p.prog.caughtUp.Store(true)
				if err := p.drain(ctx); err != nil {
					return err
				}
				return p.finishRecovery(ctx)
			}
			p.prog.passDone()
			// Passes start every poll interval: the time a pass takes does
			// not add to the delay of new events.
			if werr := backoff.Sleep(ctx, poll-time.Since(began)); werr != nil {
				return werr
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, reader.ErrBulkUnsupported):
			useSearch = true
			p.log.Warn().Err(err).Int("page_size", p.search.PageSize).Msg("server lacks the bulk export API (Teleport older than v17): reading the audit log with SearchUnstructuredEvents paging")
		case reader.Retryable(err):
			p.retrying()
			d := reader.RetryDelay(&b, err)
			lvl := zerolog.WarnLevel
			if reader.NoRoom(err) {
				lvl = zerolog.DebugLevel // the pause is logged once
			}
			p.log.WithLevel(lvl).Err(err).Dur("retry_in", d).Int("attempt", b.Attempt()).Msg("reading the audit log failed, retrying")
			if werr := backoff.Sleep(ctx, d); werr != nil {
				return werr
			}
		default:
			return err
		}
	}
}

// finishRecovery ends a recovery once a pass over the audit log has
// completed and every recording job has finished: every event is on the
// bus again.
func (p *pipeline) finishRecovery(ctx context.Context) error {
	if !p.skip.active() || !p.sessions.Idle() {
		return nil
	}
	if err := p.st.Purge(ctx, bus.RecoveryKey); err != nil {
		return err
	}
	p.skip.drop()
	p.log.Info().Int64("events", p.prog.events.Load()).Msg("recovery finished: every event read again is on the bus")
	return nil
}

// prune removes finished session jobs from the state, at most once per
// pruneEvery. A failure is logged and tried again next time.
func (p *pipeline) prune(ctx context.Context) {
	if time.Since(p.pruned) < pruneEvery {
		return
	}
	p.pruned = time.Now()
	n, err := p.st.Recordings().Prune(ctx, time.Now())
	if err != nil {
		p.log.Warn().Err(err).Int("removed", n).Msg("removing finished session jobs from the state failed")
		return
	}
	if n > 0 {
		p.log.Info().Int("removed", n).Dur("older_than", position.KeepFinished).Msg("removed finished session jobs from the state")
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
func (p *pipeline) drain(ctx context.Context) error {
	grace := drainGrace
	if ttl := p.cfg.Ingest.MissingRecordingTTL; ttl > 0 && ttl < grace {
		grace = ttl + time.Second
	}
	start := time.Now()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !p.sessions.Idle() {
		if n, ok := p.sessions.OnlyMissing(); ok && time.Since(start) >= grace {
			p.log.Warn().Int("sessions", n).Msg("exiting with session recordings still missing; the next run tries them again until missing-recording-ttl")
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if err := p.out.Flush(ctx); err != nil {
		return err
	}
	p.log.Info().Int64("events", p.prog.events.Load()).Msg("caught up and everything acknowledged (exit-on-last-event)")
	return nil
}
