// Command consumer is a minimal reader of the teleport-event-bus streams:
// it reads audit events through its own durable JetStream consumer and
// prints one line per event. Several copies with the same -durable share
// the work; a restart continues where the consumer's acks left off. It
// logs in as the reader role: on the embedded server with the reader's
// NKey seed file configure wrote,
//
//	go run ./docs/examples/consumer -url nats://127.0.0.1:4222 -nkey /etc/teleport-event-bus/nats-reader.nk \
//	    -filter 'audit.user.login'
//
// and on a cluster of configure --nats-cluster with the same seed and the CA:
//
//	go run ./docs/examples/consumer -url tls://nats-1:4222 -nkey /etc/teleport-event-bus/nats-reader.nk \
//	    -ca /etc/teleport-event-bus/ca.crt -filter 'audit.user.login'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func main() {
	var (
		cfg     = config.Default().NATS
		durable = flag.String("durable", "example-consumer", "durable consumer name (shared by every copy)")
		filter  = flag.String("filter", "audit.>", "subject filter inside the audit stream, e.g. audit.user.login")
		limit   = flag.Int("n", 0, "exit after this many events (0: run until interrupted)")
	)
	flag.StringVar(&cfg.URL, "url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	flag.StringVar(&cfg.NKey, "nkey", "", "NKey seed file of the reader role (configure's nats-reader.nk)")
	flag.StringVar(&cfg.User, "user", "", "NATS user")
	flag.StringVar(&cfg.Password, "password", os.Getenv("NATS_PASSWORD"), "NATS password (default $NATS_PASSWORD)")
	flag.StringVar(&cfg.CA, "ca", "", "CA file of the NATS servers")
	flag.StringVar(&cfg.Cert, "cert", "", "client certificate file")
	flag.StringVar(&cfg.Key, "key", "", "client key file")
	flag.StringVar(&cfg.AuditStream, "stream", cfg.AuditStream, "audit stream name ([nats] audit-stream)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, *durable, *filter, *limit); err != nil {
		fmt.Fprintf(os.Stderr, "consumer: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config.NATSConfig, durable, filter string, limit int) error {
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)
	nc, err := bus.Connect(ctx, cfg, "example-consumer", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.AuditStream, jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("consumer %q on stream %q: %w", durable, cfg.AuditStream, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return err
	}
	stopIter := context.AfterFunc(ctx, msgs.Stop)
	defer stopIter()
	defer msgs.Stop()
	for n := 0; limit == 0 || n < limit; n++ {
		m, err := msgs.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil // interrupted
		}
		if err != nil {
			return err
		}
		e, err := bus.ParseMsg(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			// Not an event of the bus contract: keep it out of the way.
			fmt.Fprintf(os.Stderr, "consumer: skipping %s: %v\n", m.Subject(), err)
			_ = m.Term()
			continue
		}
		fmt.Printf("%s %s %s %s\n", e.Time.UTC().Format(time.RFC3339), e.Type, e.ID, m.Subject())
		if err := m.DoubleAck(ctx); err != nil {
			return fmt.Errorf("ack %s: %w", e.ID, err)
		}
	}
	return nil
}
