// Command ingest reads Teleport's audit log and session recordings and
// publishes them to NATS JetStream, running an embedded NATS server when no
// server URL is configured. Flags, environment variables and the TOML file
// are described by `ingest --help` and docs/configuration.md.
package main

import (
	"context"
	"os"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest"
)

func main() {
	app := config.NewApp(config.Ingest, "ingest",
		"Read Teleport's audit log and session recordings onto NATS JetStream", ingest.Run)
	app.Commands = append(app.Commands, config.Subcommand(config.Ingest, "status",
		"Print the streams, consumers, export progress, session jobs and lease holder", status))
	config.Main(app)
}

func status(ctx context.Context, cfg *config.Config, _ zerolog.Logger) error {
	return ingest.Status(ctx, cfg, os.Stdout)
}
