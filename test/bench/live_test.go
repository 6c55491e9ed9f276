package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// The live-tail delay of an event is measured from its Teleport time (the
// `time` field, in milliseconds, which teleport-sim sets to the moment it
// appends the event) to:
//   - on the bus: the JetStream timestamp of its message (the server's clock
//     when it stored it), read back from the audit stream;
//   - at Fluentd: the moment this benchmark read its line from fluentd-sim's
//     JSONL file. fluentd-sim writes and flushes each request's records
//     before it answers, and the file is read every 5 ms, so this is at most
//     about 5 ms after fluentd-sim stored it.
//
// All processes share this machine's clock. Events teleport-sim backdates
// (session.start 2 s and session.end 1 s before it appends them, as a
// session's events are emitted when its upload is) are left out, and so are
// the first liveWarmUp of the run, while ingest starts and reads the past
// hour. The delay includes teleport-sim's live chunk age (1 s: a live export
// chunk is listed only once it has collected events that long, as
// Teleport's export does), ingest's poll interval (1 s) and the sink's batch
// wait (200 ms).
const liveWarmUp = 5 * time.Second

// runLive is phase 5: a fresh pipeline with teleport-sim appending
// o.liveRate events per second.
func runLive(ctx context.Context, bin, dir string, o options, r *report) (err error) {
	p, err := harness.NewPipeline(ctx, bin, dir)
	if err != nil {
		return err
	}
	tailCtx, stopTail := context.WithCancel(ctx)
	var tl *tail
	defer func() {
		stopTail()
		if tl != nil {
			<-tl.done
		}
		if bad := p.StopAll(30 * time.Second); len(bad) > 0 {
			r.notes = append(r.notes, "live pipeline did not stop cleanly: "+strings.Join(bad, ", "))
		}
		if err != nil {
			err = withLogs(fmt.Errorf("live tail: %w", err), o.dir != "", []string{p.LogDir}, tails(p.Procs()))
		}
	}()

	now := time.Now().UTC()
	from := now.Add(-time.Hour)
	if err := p.StartTeleport(ctx, "--events", "0", "--sessions", "0", "--huge-events", "0",
		"--from", from.Format(time.RFC3339), "--to", now.Format(time.RFC3339),
		"--live-rate", fmt.Sprint(o.liveRate), "--seed", "2"); err != nil {
		return err
	}
	jsonl := filepath.Join(dir, "fluentd.jsonl")
	if err := p.StartFluentd(ctx, "--jsonl", jsonl); err != nil {
		return err
	}
	tl = startTail(tailCtx, jsonl)
	ingest, err := p.StartIngest(ctx, "ingest", append([]string{"--start-time", from.Format(time.RFC3339), "--timeout", "1s"}, o.ingestFlags...)...)
	if err != nil {
		return err
	}
	insp, err := connect(ctx, "", p.NATSListen, p.NATSSeed(bus.RoleReader), ingest)
	if err != nil {
		return err
	}
	insp.Close()
	sink, err := p.StartSink(ctx, "fluentd-sink", o.sinkFlags...)
	if err != nil {
		return err
	}
	windowFrom := time.Now().Add(liveWarmUp)
	windowTo := windowFrom.Add(o.liveFor)

	// Run until Fluentd has audit records from 5 s past the window: an event
	// of the window still missing then is reported as not delivered.
	err = poll(ctx, 100*time.Millisecond, o.liveFor+liveWarmUp+2*time.Minute, p.Procs(), func(time.Time) (bool, string, error) {
		newest, n, err := tl.newest()
		if err != nil {
			return false, "", err
		}
		return newest.After(windowTo.Add(5 * time.Second)), fmt.Sprintf("%d records read from %s, newest of %s", n, jsonl, newest.Format(time.RFC3339)), nil
	})
	if err != nil {
		return err
	}
	onBus, err := readAudit(ctx, p.NATSListen, p.NATSSeed(bus.RoleReader), windowFrom, windowTo)
	if err != nil {
		return err
	}
	r.live.rate, r.live.window, r.live.sampled = o.liveRate, o.liveFor, len(onBus)
	arrived := tl.arrivals()
	for _, ev := range onBus {
		r.live.toBus = append(r.live.toBus, ev.stored.Sub(ev.time))
		at, ok := arrived[ev.id]
		if !ok {
			r.live.undelivered++
			continue
		}
		r.live.toFluentd = append(r.live.toFluentd, at.Sub(ev.time))
	}
	r.live.ingestRSS = usage("ingest (live phase, embedded NATS, default budget)", ingest, goalIngestRSS, "")
	r.rss = append(r.rss, r.live.ingestRSS, usage("fluentd-sink (live phase)", sink, goalSinkRSS, ""))
	return nil
}

// busEvent is one audit event as read back from the stream.
type busEvent struct {
	id     string    // uid, as fluentd-sim keys records
	time   time.Time // the event's own time
	stored time.Time // JetStream's timestamp
}

// readAudit reads the whole audit stream with an ordered consumer, as the
// reader role (NKey seed file nkey), and returns the events of [from, to),
// less the backdated session.start and session.end.
func readAudit(ctx context.Context, listen, nkey string, from, to time.Time) ([]busEvent, error) {
	cfg := config.Default().NATS
	cfg.Listen, cfg.NKey = listen, nkey
	conn, err := bus.Connect(ctx, cfg, "bench-reader", zerolog.Nop())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, cfg.AuditStream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.AuditStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.AuditStream, err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.AuditStream, err)
	}
	var out []busEvent
	for read := uint64(0); read < info.State.Msgs; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, keep, err := decodeAudit(m)
			if err != nil {
				return nil, err
			}
			if keep && !ev.time.Before(from) && ev.time.Before(to) {
				out = append(out, ev)
			}
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("stream %s: read %d of %d messages, then nothing more", cfg.AuditStream, read, info.State.Msgs)
		}
		read += uint64(n)
	}
	return out, nil
}

func decodeAudit(m jetstream.Msg) (busEvent, bool, error) {
	switch m.Headers().Get(bus.HeaderEventType) {
	case "session.start", "session.end":
		return busEvent{}, false, nil
	}
	var body struct {
		Time string `json:"time"`
		UID  string `json:"uid"`
	}
	if err := json.Unmarshal(m.Data(), &body); err != nil {
		return busEvent{}, false, fmt.Errorf("audit message %s: %w", m.Subject(), err)
	}
	t, err := time.Parse(time.RFC3339Nano, body.Time)
	if err != nil {
		return busEvent{}, false, fmt.Errorf("audit message %s: time: %w", m.Subject(), err)
	}
	meta, err := m.Metadata()
	if err != nil {
		return busEvent{}, false, fmt.Errorf("audit message %s: %w", m.Subject(), err)
	}
	return busEvent{id: body.UID, time: t, stored: meta.Timestamp}, true, nil
}

// tail follows fluentd-sim's JSONL file and notes when each audit record's
// line was first read.
type tail struct {
	done chan struct{}

	mu      sync.Mutex
	arrived map[string]time.Time
	latest  time.Time // newest `time` among the audit records (seconds)
	lines   int
	err     error
}

func startTail(ctx context.Context, path string) *tail {
	t := &tail{done: make(chan struct{}), arrived: make(map[string]time.Time)}
	go func() {
		defer close(t.done)
		if err := t.follow(ctx, path); err != nil && !errors.Is(err, context.Canceled) {
			t.mu.Lock()
			t.err = err
			t.mu.Unlock()
		}
	}()
	return t
}

// follow reads path as it grows, every 5 ms once at its end, until ctx ends.
func (t *tail) follow(ctx context.Context, path string) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	wait := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			return nil
		}
	}
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open %s: %w", path, err)
		}
		if f == nil {
			if err := wait(); err != nil {
				return err
			}
		}
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 1<<20)
	var partial []byte
	for {
		line, err := rd.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if len(partial) > 0 {
				line = append(partial, line...)
				partial = nil
			}
			if err := t.note(line, time.Now()); err != nil {
				return err
			}
			continue
		}
		partial = append(partial, line...)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if err := wait(); err != nil {
			return err
		}
	}
}

// note records one JSONL line read at `at`.
func (t *tail) note(line []byte, at time.Time) error {
	var rec struct {
		Tag    string `json:"tag"`
		Time   string `json:"time"`
		Record struct {
			UID string `json:"uid"`
		} `json:"record"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(line), &rec); err != nil {
		return fmt.Errorf("JSONL line %q: %w", line, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines++
	if rec.Tag != "test.log" || rec.Record.UID == "" {
		return nil
	}
	if _, seen := t.arrived[rec.Record.UID]; !seen {
		t.arrived[rec.Record.UID] = at
	}
	if ts, err := time.Parse(time.RFC3339, rec.Time); err == nil && ts.After(t.latest) {
		t.latest = ts
	}
	return nil
}

// newest is the newest audit record's time read so far, with the number of
// lines read and the reading's error.
func (t *tail) newest() (time.Time, int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.latest, t.lines, t.err
}

// arrivals copies the first-read time of every audit record.
func (t *tail) arrivals() map[string]time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]time.Time, len(t.arrived))
	for k, v := range t.arrived {
		out[k] = v
	}
	return out
}

// percentile is the p-th percentile (0 < p ≤ 100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
