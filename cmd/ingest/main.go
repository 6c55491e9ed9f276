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
		"Print the streams, consumers, export progress, session jobs and lease holder", status),
		config.Subcommand(config.Ingest, "recover",
			"After a stream was lost, recreated or cut short: reset the positions so the next run reads everything again, publishing only what the streams lack", recoverPositions),
		config.Subcommand(config.Ingest, "backfill",
			"Move the fixed start-time earlier, to --start-time: the next run also reads what lies before the old one, publishing only what the streams lack", backfill))
	config.Main(app)
}

func recoverPositions(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	return ingest.Recover(ctx, cfg, log, os.Stdout)
}

func backfill(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	return ingest.Backfill(ctx, cfg, log, os.Stdout)
}

func status(ctx context.Context, cfg *config.Config, _ zerolog.Logger) error {
	return ingest.Status(ctx, cfg, os.Stdout)
}
