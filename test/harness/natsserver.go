package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/configure"
)

// NATSServer starts bin/nats-server with JetStream on a free loopback port,
// its store under Dir/nats and its log in LogDir, and waits until it is
// ready. It admits the users configure wrote, with their roles'
// permissions (bus.NKeyAuthorization), like the embedded server of ingest,
// so the pipeline's ingest and sinks connect to it with --nats-url and their
// usual keys. It returns the process and the URL; the caller stops the
// process (Adopt makes StopAll do it).
func (p *Pipeline) NATSServer(ctx context.Context) (*Proc, string, error) {
	port, err := FreePort()
	if err != nil {
		return nil, "", err
	}
	users, err := bus.LoadUsers(filepath.Join(p.Conf, configure.NATSUsersFile))
	if err != nil {
		return nil, "", fmt.Errorf("nats-server: %w", err)
	}
	conf := filepath.Join(p.Dir, "nats-server.conf")
	text := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\n%s", port, filepath.Join(p.Dir, "nats"),
		bus.NKeyAuthorization(users, bus.NamesFor(config.Default().NATS, config.Default().Sink)))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, "", fmt.Errorf("nats-server: write its configuration: %w", err)
	}
	proc, err := Start(ctx, Spec{Name: "nats-server", Bin: filepath.Join(p.Bin, "nats-server"), Args: []string{"-c", conf}, LogDir: p.LogDir})
	if err != nil {
		return nil, "", err
	}
	if _, err := proc.WaitForLine(ctx, "Server is ready"); err != nil {
		proc.Kill()
		return nil, "", err
	}
	return proc, fmt.Sprintf("nats://127.0.0.1:%d", port), nil
}
