// Command demo is `make demo`: the whole pipeline on embedded defaults, each
// part a real process — teleport-sim with sample events and sessions, ingest
// with its embedded NATS server, fluentd-sink, and fluentd-sim — using
// certificates made by configure. It shows progress while events flow, then
// a table of what was delivered, stops everything and exits 0 when every
// event arrived.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

type options struct {
	bin, dir         string
	events, sessions int
	days             int
	timeout          time.Duration
	keep             bool
	forward          bool
	skipSessionTypes string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory of the built binaries")
	flag.StringVar(&o.dir, "dir", "demo", "working directory (certificates, storage, logs); emptied first")
	flag.IntVar(&o.events, "events", 20000, "audit events in the Teleport test server")
	flag.IntVar(&o.sessions, "sessions", 60, "recorded sessions")
	flag.IntVar(&o.days, "days", 3, "days of history the events spread over")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up when delivery takes longer")
	flag.BoolVar(&o.keep, "keep", false, "keep the working directory afterwards")
	flag.BoolVar(&o.forward, "forward", false, "deliver to Fluentd's in_forward (TLS, shared key, acks) instead of in_http")
	flag.Parse()
	o.skipSessionTypes = "print" // the default of skip-session-types

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	for _, name := range []string{"ingest", "fluentd-sink", "configure", "teleport-sim", "fluentd-sim"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return fmt.Errorf("%s is not built (run make build): %w", filepath.Join(bin, name), err)
		}
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	step(out, "configure: certificates, NATS credentials, Teleport role, fluent.conf, TOML → %s", filepath.Join(dir, "conf"))
	p, err := harness.NewPipeline(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer func() {
		// Leave nothing running, and say so when a part did not stop cleanly.
		if bad := p.StopAll(30 * time.Second); len(bad) > 0 && err == nil {
			err = fmt.Errorf("did not stop cleanly: %s; logs are in %s", strings.Join(bad, ", "), p.LogDir)
		}
		if !o.keep && err == nil {
			os.RemoveAll(dir)
		}
	}()
	fail := func(err error) error {
		return fmt.Errorf("%w\nlogs are in %s", err, p.LogDir)
	}

	from := time.Now().UTC().AddDate(0, 0, -o.days).Truncate(24 * time.Hour)
	step(out, "teleport-sim: %d audit events and %d sessions since %s, over gRPC mTLS", o.events, o.sessions, from.Format("2006-01-02"))
	if err := p.StartTeleport(ctx, "--events", fmt.Sprint(o.events), "--sessions", fmt.Sprint(o.sessions),
		"--from", from.Format(time.RFC3339), "--seed", "1"); err != nil {
		return fail(err)
	}
	p.Forward = o.forward
	if o.forward {
		step(out, "fluentd-sim: Fluentd in_forward over TLS with client_cert_auth and a shared key")
	} else {
		step(out, "fluentd-sim: Fluentd in_http over HTTPS with client_cert_auth")
	}
	if err := p.StartFluentd(ctx); err != nil {
		return fail(err)
	}

	began := time.Now()
	step(out, "ingest: embedded NATS JetStream on %s, storage %s", p.NATSListen, p.Storage)
	ing, err := p.StartIngest(ctx, "ingest", "--start-time", from.Format(time.RFC3339))
	if err != nil {
		return fail(err)
	}
	insp, err := connect(ctx, p, ing)
	if err != nil {
		return fail(err)
	}
	defer insp.Close()
	if o.forward {
		step(out, "fluentd-sink: durable JetStream consumers → Fluentd in_forward (PackedForward, acks) over mTLS")
	} else {
		step(out, "fluentd-sink: durable JetStream consumers → Fluentd over mTLS")
	}
	if _, err := p.StartSink(ctx, "fluentd-sink"); err != nil {
		return fail(err)
	}

	tp, err := p.TeleportStats(ctx)
	if err != nil {
		return fail(err)
	}
	sessions, err := p.TeleportSessions(ctx)
	if err != nil {
		return fail(err)
	}
	wantSession := harness.ExpectedSessionEvents(sessions, o.skipSessionTypes)
	want := want{audit: uint64(tp.Events), session: uint64(wantSession)}

	final, err := watch(ctx, out, p, insp, want)
	took := time.Since(began)
	if err != nil {
		return fail(err)
	}
	ids, err := insp.MsgIDs(ctx, insp.AuditStream())
	if err != nil {
		return fail(err)
	}
	streamDups := 0
	for _, n := range ids {
		streamDups += n - 1
	}
	closed, err := checkClosed(ctx, p, insp)
	if err != nil {
		return fail(err)
	}
	printTable(out, o, tp.Events, len(sessions), tp.MissingRecordings, want, final, streamDups, took, closed)
	if final.fluentd.DuplicatesTotal != 0 || streamDups != 0 || final.bus.DeadLetters != 0 {
		return errors.New("delivery was not clean: see the table")
	}
	if closed != "refused / refused" {
		return errors.New("the bus is not closed: see the table")
	}
	return nil
}

// checkClosed tries what the forger did on the demo's bus: connect
// without credentials, and publish an audit event with the reader's key.
// Each is "refused" when the server refused it and the audit stream kept
// its count, "ACCEPTED" otherwise.
func checkClosed(ctx context.Context, p *harness.Pipeline, insp *harness.Inspector) (string, error) {
	before, err := insp.Counts(ctx)
	if err != nil {
		return "", err
	}
	anon := "refused"
	cfg := config.Default().NATS
	cfg.Listen = p.NATSListen
	if nc, err := bus.Connect(ctx, cfg, "demo-anonymous", zerolog.Nop()); err == nil {
		nc.Close()
		anon = "ACCEPTED"
	}
	cfg.NKey = p.NATSSeed(bus.RoleReader)
	nc, err := bus.Connect(ctx, cfg, "demo-reader", zerolog.Nop())
	if err != nil {
		return "", fmt.Errorf("connect with the reader's key: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, perr := js.Publish(pctx, bus.AuditSubject("user.login"), []byte(`{"event":"user.login","uid":"forged-1","user":"attacker"}`))
	cancel()
	after, err := insp.Counts(ctx)
	if err != nil {
		return "", err
	}
	forged := "refused"
	if perr == nil || after.AuditTotal != before.AuditTotal {
		forged = "ACCEPTED"
	}
	return anon + " / " + forged, nil
}

type want struct{ audit, session uint64 }

type snapshot struct {
	bus     harness.BusCounts
	fluentd fluentdStats
}

type fluentdStats struct {
	audit, session  int64
	DuplicatesTotal int64
}

// connect waits for the embedded NATS server of ingest to answer.
func connect(ctx context.Context, p *harness.Pipeline, ingest *harness.Proc) (*harness.Inspector, error) {
	for {
		insp, err := harness.NewInspector(ctx, "", p.NATSListen, p.NATSSeed(bus.RoleReader))
		if err == nil {
			return insp, nil
		}
		if exited, code := ingest.Exited(); exited {
			return nil, fmt.Errorf("ingest exited (code %d) before its NATS server answered\n%s", code, ingest.Tail(10))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the embedded NATS server on %s never answered: %w", p.NATSListen, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// watch polls the bus and fluentd-sim until everything Teleport holds has
// been delivered, printing progress.
func watch(ctx context.Context, out io.Writer, p *harness.Pipeline, insp *harness.Inspector, w want) (snapshot, error) {
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var last time.Time
	var s snapshot
	for {
		var err error
		if s.bus, err = insp.Counts(ctx); err != nil {
			return s, err
		}
		fs, err := p.FluentdStats(ctx)
		if err != nil {
			return s, err
		}
		s.fluentd = fluentdStats{DuplicatesTotal: fs.DuplicatesTotal}
		for tag, n := range fs.Stored {
			if strings.HasPrefix(tag, "session.") {
				s.fluentd.session += n
			} else {
				s.fluentd.audit += n
			}
		}
		done := s.bus.AuditTotal == w.audit && s.bus.Sessions == w.session &&
			uint64(s.fluentd.audit) >= w.audit && uint64(s.fluentd.session) >= w.session
		line := fmt.Sprintf("  on the bus: audit %d/%d, session %d/%d   delivered to Fluentd: audit %d, session %d",
			s.bus.AuditTotal, w.audit, s.bus.Sessions, w.session, s.fluentd.audit, s.fluentd.session)
		switch {
		case tty:
			fmt.Fprintf(out, "\r%s", line)
			if done {
				fmt.Fprintln(out)
			}
		case done || time.Since(last) >= 2*time.Second:
			fmt.Fprintln(out, line)
			last = time.Now()
		}
		if done {
			return s, nil
		}
		for _, proc := range p.Procs() {
			if exited, code := proc.Exited(); exited {
				return s, fmt.Errorf("%s exited (code %d) before delivery finished\n%s", proc.Name, code, proc.Tail(15))
			}
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("delivery did not finish: %w (last: %s)", ctx.Err(), strings.TrimSpace(line))
		case <-tick.C:
		}
	}
}

func printTable(out io.Writer, o options, events, sessions, missing int, w want, s snapshot, streamDups int, took time.Duration, closed string) {
	fmt.Fprintf(out, "\nteleport-event-bus demo: delivered in %s\n\n", took.Round(100*time.Millisecond))
	tw := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	row := func(stage, what string, n any) { fmt.Fprintf(tw, "  %s\t%s\t%10v\n", stage, what, n) }
	row("in Teleport", "audit events", events)
	row("", "sessions / without a recording", fmt.Sprintf("%d / %d", sessions, missing))
	row("", "session events ("+o.skipSessionTypes+" skipped)", w.session)
	subjects := make([]string, 0, len(s.bus.Audit))
	for subj := range s.bus.Audit {
		subjects = append(subjects, subj)
	}
	sort.Strings(subjects)
	first := "on the bus"
	for _, subj := range subjects {
		row(first, subj, s.bus.Audit[subj])
		first = ""
	}
	row(first, "session.*", s.bus.Sessions)
	row("delivered to Fluentd", "test.log", s.fluentd.audit)
	row("", "session.*.log", s.fluentd.session)
	row("duplicates", "at Fluentd / in the stream", fmt.Sprintf("%d / %d", s.fluentd.DuplicatesTotal, streamDups))
	row("dead letters", "deadletter.>", s.bus.DeadLetters)
	row("closed bus", "no credentials / forged publish", closed)
	row("time taken", "ingest start → last delivery", took.Round(100*time.Millisecond))
	tw.Flush()
	fmt.Fprintln(out)
}

func step(out io.Writer, format string, args ...any) {
	fmt.Fprintf(out, "==> "+format+"\n", args...)
}
