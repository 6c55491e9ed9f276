package bus

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx is a context that ends with the test (and after a minute at most).
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testLog writes the bus's log lines to the test log.
func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

// openTestBus starts an embedded server on a random port in a temporary
// storage directory and connects to it.
func openTestBus(t *testing.T, cfg config.NATSConfig) *Bus {
	t.Helper()
	return openTestBusIn(t, cfg, t.TempDir())
}

func openTestBusIn(t *testing.T, cfg config.NATSConfig, storage string) *Bus {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	b, err := Open(testCtx(t), cfg, storage, "bus-test", testLog(t), true)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}
