package lock_test

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/lock"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// How ingest starts the watcher beside its reader: with the open bus, the
// Teleport client it already holds and its metrics registry. New fails at
// once when the role cannot create locks; Run returns nil when ctx ends.
func ExampleNew() {
	run := func(ctx context.Context, cfg *config.Config, b *bus.Bus, src *teleport.Client, reg prometheus.Registerer, log zerolog.Logger) error {
		g, gctx := errgroup.WithContext(ctx)
		if lock.Enabled(cfg) {
			w, err := lock.New(ctx, b, src, lock.Options{Lock: cfg.Lock, Metrics: lock.NewMetrics(reg), Log: log})
			if err != nil {
				return err
			}
			g.Go(func() error { return w.Run(gctx) })
		}
		// … the reader's own goroutines …
		return g.Wait()
	}
	_ = run
}
