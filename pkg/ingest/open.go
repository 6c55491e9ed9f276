package ingest

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
	metricsrv "github.com/teleport-event-bus/teleport-event-bus/pkg/metrics"
)

// store is what a run opens before it reads, and closes when it ends: the
// memory budget, the profile and metrics endpoints, the bus (with the
// embedded server, which takes the storage directory's lock), and the
// state bucket, with the streams checked against the saved positions and
// only then created.
type store struct {
	cfg *config.Config
	log zerolog.Logger
	bus *bus.Bus
	kv  jetstream.KeyValue
	m   *metrics
	// closers run in reverse order on close.
	closers []func()
}

// openStore opens the store; on an error, what it opened is closed.
func openStore(ctx context.Context, cfg *config.Config, log zerolog.Logger) (s *store, err error) {
	s = &store{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.close()
			s = nil
		}
	}()
	warnOpenBus(cfg, log)
	mb, err := startBudget(cfg)
	if err != nil {
		return s, err
	}
	if addr := cfg.Ingest.PprofAddr; addr != "" {
		prof, err := metricsrv.ListenProfiles(addr, log)
		if err != nil {
			return s, cfg.PprofListenError(err)
		}
		s.onClose(func() { _ = prof.Shutdown(context.WithoutCancel(ctx)) })
	}
	b, err := bus.Open(ctx, cfg.NATS, cfg.Storage, "ingest", log, true, bus.WithSinkConsumers(cfg.Sink))
	if err != nil {
		return s, err
	}
	s.bus = b
	s.onClose(b.Close)
	logBudget(mb, cfg.NATS.URL == "", log)
	if s.kv, err = prepare(ctx, b, cfg.File, log); err != nil {
		return s, err
	}
	reg := metricsrv.NewRegistry()
	s.m = newMetrics(reg)
	s.m.memory = newMemoryMetrics(reg, mb, cfg.NATS.URL == "")
	if addr := cfg.MetricsAddrFor(config.Ingest); addr != "" {
		srv, err := metricsrv.Listen(addr, reg, s.ready, log)
		if err != nil {
			return s, cfg.MetricsListenError(config.Ingest, err)
		}
		s.onClose(func() { _ = srv.Shutdown(context.WithoutCancel(ctx)) })
	}
	return s, nil
}

// onClose adds f to what close runs.
func (s *store) onClose(f func()) { s.closers = append(s.closers, f) }

// close closes what openStore opened, the last opened first.
func (s *store) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// ready is the metrics server's readiness: connected to NATS, and not
// paused for want of room.
func (s *store) ready() error {
	if !s.bus.Conn.IsConnected() {
		return errors.New("not connected to NATS")
	}
	return s.m.pause.ready()
}

// warnOpenBus says, at start, when the embedded server will admit anyone:
// no users file, token or user is configured (a TOML from before
// configure wrote NATS credentials).
func warnOpenBus(cfg *config.Config, log zerolog.Logger) {
	n := cfg.NATS
	if n.URL != "" || n.Users != "" || n.Token != "" || n.User != "" {
		return
	}
	dir := "<directory of the TOML>"
	if cfg.File != "" {
		dir = filepath.Dir(cfg.File)
	}
	log.Warn().Str("listen", bus.WithDefaults(n).Listen).
		Msgf("the embedded NATS server is open: any local process can publish, read or delete the audit trail; close it with `configure --nats-credentials %s`, then restart ingest and fluentd-sink", dir)
}

// prepare opens the state bucket, checks that the streams the saved
// positions belong to are still there as they were (ErrStreamLost: a
// stream missing, recreated or cut short), and only then creates or
// updates the streams, so a lost stream is never silently replaced by an
// empty one. It tries again while JetStream cannot answer yet (a cluster
// that is still electing its leaders after a start), with a log line per
// try. Other errors end it at once.
func prepare(ctx context.Context, b *bus.Bus, cfgFile string, log zerolog.Logger) (jetstream.KeyValue, error) {
	bo := backoff.Backoff{Policy: backoff.Reconnect}
	for {
		kv, err := b.State(ctx)
		if err == nil {
			if err = ensureChecked(ctx, b, kv, cfgFile, log); err == nil {
				return kv, nil
			}
		}
		if ctx.Err() != nil || !bus.Unavailable(err) {
			return nil, err
		}
		d := bo.Next()
		log.Warn().Err(err).Int("attempt", bo.Attempt()).Dur("retry_in", d).Msg("JetStream not ready, retrying")
		if werr := backoff.Sleep(ctx, d); werr != nil {
			return nil, err
		}
	}
}

// ensureChecked compares the streams with the saved positions, then
// creates or updates the streams and records the ones the positions do not
// know yet.
func ensureChecked(ctx context.Context, b *bus.Bus, kv jetstream.KeyValue, cfgFile string, log zerolog.Logger) error {
	st, err := position.Open(ctx, kv, b.Cfg.StateBucket)
	if err != nil {
		return err
	}
	if err := checkStreams(ctx, b.StreamInfo, st, b.Cfg, cfgFile); err != nil {
		return err
	}
	if err := b.EnsureStreams(ctx); err != nil {
		return err
	}
	return adoptStreams(ctx, b.StreamInfo, kv, st, b.Cfg, log)
}
