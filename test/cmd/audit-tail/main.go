// Command audit-tail is a consumer of the bus other than the Fluentd sink,
// written with nothing but pkg/bus (and the [nats] section type of
// pkg/config), as a SIEM feed or an archiver would be: a durable pull
// consumer on the audit stream that writes the id of every event it
// receives, one a line, and acknowledges each message only after its line
// was written. The end-to-end tests run it beside fluentd-sink to show the
// fan-out: both receive every audit event.
//
//	audit-tail --nats-listen 127.0.0.1:4222 --nats-nkey nats-reader.nk --out ids.txt --exit-on-idle 5s
//
// On a closed bus it connects with the reader role's NKey seed file, the
// one configure writes as nats-reader.nk.
//
// With --exit-on-idle it exits 0 once the stream holds messages, the
// consumer has none left to deliver or awaiting an ack, and nothing arrived
// for that long. Killed and restarted, it resumes where its durable consumer
// stands, so a line may repeat (at-least-once) but none is missing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

const program = "audit-tail"

type options struct {
	url, listen     string
	nkey            string
	stream, durable string
	filter          string
	out             string
	batch           int
	exitOnIdle      time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet(program, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "nats-url", "", "NATS server URL(s), comma-separated; empty: the embedded server of ingest on --nats-listen")
	fs.StringVar(&o.listen, "nats-listen", bus.DefaultListen, "address of ingest's embedded NATS server (used when --nats-url is empty)")
	fs.StringVar(&o.nkey, "nats-nkey", "", "NKey seed file of the reader role (configure's nats-reader.nk); empty: no credentials")
	fs.StringVar(&o.stream, "stream", config.Default().NATS.AuditStream, "audit stream name ([nats] audit-stream)")
	fs.StringVar(&o.durable, "durable", program, "durable consumer name")
	fs.StringVar(&o.filter, "filter", bus.AuditPrefix+".>", "subject filter")
	fs.StringVar(&o.out, "out", "", "append the ids to this file (default: standard output)")
	fs.IntVar(&o.batch, "batch", 200, "messages fetched at once")
	fs.DurationVar(&o.exitOnIdle, "exit-on-idle", 0, "exit 0 once caught up and idle this long (0: run until stopped)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.batch <= 0 {
		return fmt.Errorf("--batch %d: must be at least 1", o.batch)
	}
	out := stdout
	if o.out != "" {
		f, err := os.OpenFile(o.out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open --out %q: %w", o.out, err)
		}
		defer f.Close()
		out = f
	}
	log := zerolog.New(stderr).With().Timestamp().Str("program", program).Logger()
	return tail(ctx, o, out, log)
}

// tail reads the consumer until ctx ends or, with exitOnIdle, it is caught
// up and idle.
func tail(ctx context.Context, o options, out io.Writer, log zerolog.Logger) error {
	cfg := config.Default().NATS
	cfg.URL, cfg.Listen, cfg.NKey = o.url, o.listen, o.nkey
	b, err := bus.Open(ctx, cfg, "", program, log, false)
	if err != nil {
		return err
	}
	defer b.Close()
	cons, err := openConsumer(ctx, b, o, log)
	if err != nil {
		return err
	}
	log.Info().Str("stream", o.stream).Str("consumer", o.durable).Str("filter", o.filter).Msg("audit-tail reading")

	received := 0
	lastMsg := time.Now()
	var lines strings.Builder
	for ctx.Err() == nil {
		batch, err := cons.Fetch(o.batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			log.Warn().Err(err).Msg("fetch failed, retrying")
			if !pause(ctx, 250*time.Millisecond) {
				break
			}
			continue
		}
		var msgs []jetstream.Msg
		lines.Reset()
		for m := range batch.Messages() {
			e, err := bus.ParseMsg(m.Subject(), m.Headers(), m.Data())
			if err != nil {
				// Not ours to judge: say so, and keep it out of the way.
				log.Warn().Err(err).Msg("message outside the bus contract, acknowledged without an id")
				msgs = append(msgs, m)
				continue
			}
			lines.WriteString(e.ID)
			lines.WriteByte('\n')
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) {
			log.Debug().Err(err).Msg("fetch ended early")
		}
		if len(msgs) > 0 {
			// Written (one write, so a kill cannot split it) before the
			// acks: a crash repeats lines, never loses them.
			if _, err := io.WriteString(out, lines.String()); err != nil {
				return fmt.Errorf("write ids: %w", err)
			}
			for _, m := range msgs {
				if err := m.Ack(); err != nil {
					log.Warn().Err(err).Msg("ack failed; the message will be redelivered")
				}
			}
			received += len(msgs)
			lastMsg = time.Now()
			continue
		}
		if o.exitOnIdle > 0 && time.Since(lastMsg) >= o.exitOnIdle && caughtUp(ctx, b, cons, o.stream, log) {
			log.Info().Int("received", received).Msg("audit-tail caught up and idle: exiting")
			return nil
		}
	}
	log.Info().Int("received", received).Msg("audit-tail stopped")
	return nil
}

// openConsumer waits for the stream (ingest creates it) and opens the
// durable consumer.
func openConsumer(ctx context.Context, b *bus.Bus, o options, log zerolog.Logger) (jetstream.Consumer, error) {
	logged := false
	for {
		cons, err := b.Consumer(ctx, o.stream, o.durable, []string{o.filter}, 30*time.Second, 1000, 0)
		if err == nil {
			return cons, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, err
		}
		if !logged {
			log.Info().Str("stream", o.stream).Msg("waiting for the stream to be created")
			logged = true
		}
		if !pause(ctx, 250*time.Millisecond) {
			return nil, fmt.Errorf("stream %q: %w", o.stream, ctx.Err())
		}
	}
}

// caughtUp reports whether the stream holds messages and the consumer has
// none left to deliver or awaiting an ack.
func caughtUp(ctx context.Context, b *bus.Bus, cons jetstream.Consumer, stream string, log zerolog.Logger) bool {
	info, err := cons.Info(ctx)
	if err != nil {
		log.Warn().Err(err).Msg("consumer info")
		return false
	}
	s, err := b.JS.Stream(ctx, stream)
	if err != nil {
		log.Warn().Err(err).Msg("stream info")
		return false
	}
	return s.CachedInfo().State.Msgs > 0 && info.NumPending == 0 && info.NumAckPending == 0
}

// pause waits d, or less when ctx ends; it reports whether ctx is still
// live.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
