package ingest

import (
	"context"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/lock"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// runWithLock runs read and, when lock.enabled is on (and this is no dry
// run), the lock watcher beside it: its own durable consumer on
// audit.user.login using this process's Teleport connection, so only the
// lease holder places locks. The watcher checks the role's lock permission
// before anything is read, and stops when read returns (exit-on-last-event).
func runWithLock(ctx context.Context, cfg *config.Config, log zerolog.Logger, b *bus.Bus, src *teleport.Client, m *metrics, read func(context.Context) error) error {
	if !lock.Enabled(cfg) {
		return read(ctx)
	}
	w, err := lock.New(ctx, b, src, lock.Options{Lock: cfg.Lock, Metrics: m.lock, Log: log})
	if err != nil {
		return err
	}
	log.Info().Int("failed_attempts", cfg.Lock.FailedAttemptsCount).Dur("period", cfg.Lock.Period).
		Dur("lock_for", cfg.Lock.For).Msg("locking users after repeated failed logins")
	g, gctx := errgroup.WithContext(ctx)
	wctx, stopWatcher := context.WithCancel(gctx)
	defer stopWatcher()
	g.Go(func() error { return w.Run(wctx) })
	g.Go(func() error {
		defer stopWatcher()
		return read(gctx)
	})
	return g.Wait()
}
