// Command ingest: Read Teleport's audit log and session recordings onto NATS JetStream.
// Flags, environment variables and the TOML file are described by
// `ingest --help` and docs/configuration.md.
package main

import (
	"context"
	"errors"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func main() {
	config.Main(config.NewApp(config.Ingest, "ingest",
		"Read Teleport's audit log and session recordings onto NATS JetStream", run))
}

func run(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	return errors.New("ingest is not wired yet")
}
