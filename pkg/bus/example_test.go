package bus_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// A program other than the Fluentd sink reads audit events: a durable pull
// consumer on the audit stream, ParseMsg for each message, Ack when handled.
// (Here an embedded server in a temporary directory stands in for the
// cluster, and two events are published first.)
func ExampleBus_Consumer() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	storage, err := os.MkdirTemp("", "bus-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(storage)

	cfg := config.NATSConfig{Listen: "127.0.0.1:0"}
	b, err := bus.Open(ctx, cfg, storage, "example", zerolog.Nop(), true)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	if err := b.EnsureStreams(ctx); err != nil {
		fmt.Println(err)
		return
	}
	for i, typ := range []string{"user.login", "session.start"} {
		e := bus.Event{ID: fmt.Sprint("ev-", i), Type: typ, Time: time.Now(), JSON: []byte(`{}`)}
		if _, err := b.JS.PublishMsg(ctx, bus.NewMsg(e)); err != nil {
			fmt.Println(err)
			return
		}
	}

	// The consumer side.
	cons, err := b.Consumer(ctx, b.Cfg.AuditStream, "siem", []string{"audit.>"}, 30*time.Second, 100, 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	for m := range batch.Messages() {
		e, err := bus.ParseMsg(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(m.Subject(), e.ID)
		if err := m.Ack(); err != nil {
			fmt.Println(err)
			return
		}
	}
	// Output:
	// audit.user.login ev-0
	// audit.session.start ev-1
}
