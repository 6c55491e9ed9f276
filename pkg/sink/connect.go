package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// connectBackoff spaces the attempts to reach NATS at start: the sink may
// start before the server (one deployment, or a node still booting).
var connectBackoff = backoff.Policy{Base: 500 * time.Millisecond, Max: 15 * time.Second, Jitter: 0.2}

// openBus connects to the bus, retrying with backoff and a log line per
// attempt while NATS is unreachable, until ctx is done. Refused
// credentials, a TLS failure or a bad setting end it at once with the
// bus's error: retrying would not change the answer.
func openBus(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*bus.Bus, error) {
	for attempt := 1; ; attempt++ {
		b, err := bus.Open(ctx, cfg.NATS, cfg.Storage, "fluentd-sink", log, false)
		if err == nil {
			if attempt > 1 {
				log.Info().Str("url", b.Conn.ConnectedUrlRedacted()).Int("attempt", attempt).Msg("connected to NATS")
			}
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, gaveUp(err, ctx.Err())
		}
		if !natsUnreachable(err) {
			return nil, err
		}
		delay := connectBackoff.Delay(uint64(attempt))
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", delay).Msg("NATS unreachable, retrying")
		if werr := backoff.Sleep(ctx, delay); werr != nil {
			return nil, gaveUp(err, werr)
		}
	}
}

// gaveUp adds why the attempts stopped to the last attempt's error, so a
// stop (context.Canceled) is recognisable whatever the attempt returned.
func gaveUp(last, why error) error {
	if errors.Is(last, why) {
		return last
	}
	return fmt.Errorf("%w; gave up waiting: %w", last, why)
}

// natsUnreachable reports whether a failed connection may succeed later:
// nothing listening, a dial timeout, a connection cut during the handshake.
// TLS certificate errors are not (a TLS alert from the server comes as a
// net.Error, so they are checked first).
func natsUnreachable(err error) bool {
	var (
		alert  tls.AlertError
		verify *tls.CertificateVerificationError
		auth   x509.UnknownAuthorityError
		host   x509.HostnameError
	)
	if errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &auth) || errors.As(err, &host) {
		return false
	}
	if errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}
