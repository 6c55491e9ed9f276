// Package ingest is the pipeline stage between Teleport and the bus: it
// reads Teleport's audit log (bulk export API, or search paging on older
// servers) and the session recordings that session.upload events announce,
// and publishes each event once onto JetStream.
//
// Run reads like the pipeline, one call per step: it checks the Teleport
// identity, opens the store (open.go: the memory budget of memory.go, the
// bus with the embedded server and its storage lock, the state bucket
// with the streams checked against the saved positions, the metrics of
// metrics.go), takes the lease that makes one ingest process the reader
// (lease.go), and runs the pipeline (pipeline.go). The pipeline builds the
// guard that stops the run when a stream no longer holds what the
// positions cover (guard.go), the outlet in front of the publisher
// (outlet.go: trimming of oversized events in trim.go, the pause while the
// bus has no room in pause.go), the readers of pkg/ingest/read over their
// slices of pkg/ingest/position, and runs them in passes (passes.go) with
// the progress report (progress.go), the watch over removed messages
// (retention.go) and the lock watcher (lock.go); with exit-on-last-event
// it ends once the consumers have it all (finish.go). The commands beside
// Run are `ingest status` (status.go), `ingest recover` (recover.go) and
// `ingest backfill` (backfill.go).
package ingest

import (
	"context"
	"errors"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

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
	s, err := openStore(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped (SIGTERM) while starting: a clean exit
		}
		return err
	}
	defer s.close()
	for {
		err := s.lead(ctx)
		if !errors.Is(err, errLeaseLost) {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		log.Warn().Err(err).Msg("stopped reading; standing by")
	}
}

// lead waits for the lease, then runs the pipeline until ctx ends, the
// work is done (exit-on-last-event) or the lease is lost. The lease is
// renewed from the moment it is held, so a slow connection to Teleport
// does not let it lapse.
func (s *store) lead(ctx context.Context) error {
	l := newLease(s.kv, s.cfg.Ingest.LeaseTTL, s.log)
	l.memory = s.m.memory.report
	if err := l.acquire(ctx); err != nil {
		return err
	}
	s.m.leader.Set(1)
	defer s.m.leader.Set(0)
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
		return s.read(gctx, l.gate)
	})
	return g.Wait()
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
