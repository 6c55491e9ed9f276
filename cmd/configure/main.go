// Command configure: Write mTLS certificates, the Teleport role, fluent.conf and the TOML configuration.
// Flags, environment variables and the TOML file are described by
// `configure --help` and docs/configuration.md.
package main

import (
	"context"
	"errors"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func main() {
	config.Main(config.NewApp(config.Configure, "configure",
		"Write mTLS certificates, the Teleport role, fluent.conf and the TOML configuration", run))
}

func run(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	return errors.New("configure is not wired yet")
}
