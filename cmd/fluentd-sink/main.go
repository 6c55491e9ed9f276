// Command fluentd-sink: Deliver audit events and session recordings from JetStream to Fluentd over mTLS.
// Flags, environment variables and the TOML file are described by
// `fluentd-sink --help` and docs/configuration.md.
package main

import (
	"context"
	"errors"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func main() {
	config.Main(config.NewApp(config.Sink, "fluentd-sink",
		"Deliver audit events and session recordings from JetStream to Fluentd over mTLS", run))
}

func run(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	return errors.New("fluentd-sink is not wired yet")
}
