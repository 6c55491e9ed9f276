package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest/position"
)

// Status prints what `ingest status` shows: the streams (messages,
// bytes), their consumers (pending, ack floor), export progress by date,
// session recording jobs and the lease holder. It connects to the bus of
// cfg; with the embedded server and no ingest serving it, it opens the
// storage directory itself, but only once it holds the directory's lock:
// a store another process holds is never opened, and the error names that
// process and why the connection to it failed.
func Status(ctx context.Context, cfg *config.Config, w io.Writer) error {
	b, err := openForStatus(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := printStreams(ctx, b, w); err != nil {
		return err
	}
	kv, err := b.JS.KeyValue(ctx, b.Cfg.StateBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = fmt.Fprintf(w, "\nState bucket %q does not exist yet: ingest has not run.\n", b.Cfg.StateBucket)
		return err
	}
	if err != nil {
		return fmt.Errorf("open state bucket %q: %w", b.Cfg.StateBucket, err)
	}
	st, err := position.Open(ctx, kv, b.Cfg.StateBucket)
	if err != nil {
		return err
	}
	return printState(st, w, time.Now())
}

// openForStatus connects to the running bus or, with the embedded server
// and none running, serves the storage directory itself for the report.
func openForStatus(ctx context.Context, cfg *config.Config) (*bus.Bus, error) {
	log := zerolog.Nop()
	b, connErr := bus.Open(ctx, cfg.NATS, cfg.Storage, "ingest-status", log, false)
	if connErr == nil || cfg.NATS.URL != "" || cfg.Storage == "" {
		return b, connErr
	}
	// No ingest answers on the embedded server's address: read the store
	// directly, which StartEmbedded does only after taking its lock.
	nc := cfg.NATS
	nc.Listen = "127.0.0.1:0"
	b, err := bus.Open(ctx, nc, cfg.Storage, "ingest-status", log, true, bus.WithSinkConsumers(cfg.Sink))
	var locked *bus.StoreLockedError
	if errors.As(err, &locked) {
		return nil, fmt.Errorf("storage directory %q is locked by %s, but no NATS server answers for it (%w): status read nothing there; check that process and [nats] listen",
			locked.Dir, locked.Holder, connErr)
	}
	if err != nil {
		return nil, fmt.Errorf("%w; and reading the storage directory itself failed: %w", connErr, err)
	}
	return b, nil
}

// statusWait bounds how long status asks a stream, or the list of its
// consumers, again while the cluster elects a leader: a request sent
// during an election goes unanswered, and after a node loss each stream
// and the cluster's metadata elect theirs in turn.
const statusWait = 45 * time.Second

// printStreams prints each stream and its consumers.
func printStreams(ctx context.Context, b *bus.Bus, w io.Writer) error {
	for _, c := range bus.StreamConfigs(b.Cfg) {
		wctx, cancel := context.WithTimeout(ctx, statusWait)
		err := bus.WaitStream(wctx, b.JS, c.Name)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
	}
	infos, err := b.StreamInfos(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSUBJECTS\tMESSAGES\tBYTES\tFIRST SEQ\tLAST SEQ")
	for _, s := range infos {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", s.Config.Name, strings.Join(s.Config.Subjects, ","),
			s.State.Msgs, s.State.Bytes, s.State.FirstSeq, s.State.LastSeq)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONSUMER\tSTREAM\tPENDING\tACK PENDING\tACK FLOOR\tREDELIVERED")
	for _, s := range infos {
		cs, err := consumersOf(ctx, b, s.Config.Name)
		if err != nil {
			return err
		}
		for _, c := range cs.Infos {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", c.Name, s.Config.Name, c.NumPending, c.NumAckPending,
				c.AckFloor.Stream, c.NumRedelivered)
		}
		for _, name := range slices.Sorted(maps.Keys(cs.Unanswered)) {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", name, s.Config.Name, unanswered(cs.Unanswered[name]))
		}
	}
	return tw.Flush()
}

// consumersOf lists stream's consumers, asking again for up to statusWait
// while the list goes unanswered (the metadata leader being elected).
func consumersOf(ctx context.Context, b *bus.Bus, stream string) (*bus.ConsumerList, error) {
	deadline := time.Now().Add(statusWait)
	for {
		cs, err := b.ConsumerInfos(ctx, stream)
		if err == nil || !bus.Unavailable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return cs, err
		}
	}
}

// unanswered is the status row of a consumer the server could not get the
// state of.
func unanswered(why string) string {
	if why == "" {
		why = "no answer in time"
	}
	return "unknown: " + why + " (its NATS server may be down or electing a leader)"
}

// printState prints export progress, session jobs and the lease.
func printState(st *position.Store, w io.Writer, now time.Time) error {
	var start position.Start
	if ok, err := st.Get(position.KeyStartTime, &start); err != nil {
		return err
	} else if ok {
		fmt.Fprintf(w, "\nStart time: %s\n", start.StartTime.UTC().Format(time.RFC3339))
	}
	for _, k := range slices.Sorted(slices.Values(st.Keys(position.PrefixMark))) {
		var m streamMark
		if _, err := st.Get(k, &m); err != nil {
			return err
		}
		fmt.Fprintf(w, "Stream %s: positions belong to the stream created %s, acknowledged up to sequence %d\n",
			m.Stream, m.Created.UTC().Format(time.RFC3339Nano), m.Seq)
	}
	var rs recoveryState
	if ok, err := st.Get(bus.RecoveryKey, &rs); err != nil {
		return err
	} else if ok {
		fmt.Fprintf(w, "Recovery under way since %s (%s)\n", rs.Started.UTC().Format(time.RFC3339), rs.Reason)
	}
	var ss position.Search
	if ok, _ := st.Get(position.KeySearch, &ss); ok {
		fmt.Fprintf(w, "Search paging at window %s (page key %q, last id %q)\n",
			ss.WindowStart.UTC().Format(time.RFC3339), ss.Cursor, ss.LastID)
	}
	if err := printDates(st, w); err != nil {
		return err
	}
	printSessions(st, w)
	fmt.Fprintln(w)
	if raw, ok := st.Raw(bus.CaughtUpKey); ok {
		cu, err := bus.ParseCaughtUp(raw)
		if err != nil {
			return fmt.Errorf("state bucket %q: %w", st.Bucket(), err)
		}
		names := slices.Sorted(maps.Keys(cu.Streams))
		seqs := make([]string, len(names))
		for i, n := range names {
			seqs[i] = fmt.Sprintf("%s to %d", n, cu.Streams[n])
		}
		fmt.Fprintf(w, "Caught up: %s (%s)\n", cu.Time.UTC().Format(time.RFC3339), strings.Join(seqs, ", "))
	}
	raw, ok := st.Raw(keyLease)
	var lv leaseValue
	if !ok || json.Unmarshal(raw, &lv) != nil || lv.Holder == "" {
		fmt.Fprintln(w, "Lease: free")
		return nil
	}
	state := "held"
	if now.After(lv.Expires) {
		state = "expired"
	}
	if _, err := fmt.Fprintf(w, "Lease: %s by %s until %s\n", state, lv.Holder, lv.Expires.UTC().Format(time.RFC3339)); err != nil {
		return err
	}
	if lv.Memory != nil {
		_, err := fmt.Fprintln(w, lv.Memory.line())
		return err
	}
	return nil
}

// printDates prints one line per export date.
func printDates(st *position.Store, w io.Writer) error {
	type row struct {
		chunks, done int
		events       int64
		closed       bool
	}
	rows := map[string]*row{}
	get := func(date string) *row {
		if rows[date] == nil {
			rows[date] = &row{}
		}
		return rows[date]
	}
	for _, k := range st.Keys(position.PrefixDate) {
		var ds position.Date
		if _, err := st.Get(k, &ds); err != nil {
			return err
		}
		r := get(strings.TrimPrefix(k, position.PrefixDate))
		r.closed = ds.Closed
		if ds.Closed {
			r.chunks, r.done, r.events = ds.Chunks, ds.Chunks, ds.Events
		}
	}
	for _, k := range st.Keys(position.PrefixChunk) {
		date, _, _ := strings.Cut(strings.TrimPrefix(k, position.PrefixChunk), ".")
		var cs position.Chunk
		if _, err := st.Get(k, &cs); err != nil {
			return err
		}
		r := get(date)
		r.chunks++
		r.events += cs.Events
		if cs.Done {
			r.done++
		}
	}
	if len(rows) == 0 {
		return nil
	}
	dates := make([]string, 0, len(rows))
	for d := range rows {
		dates = append(dates, d)
	}
	slices.Sort(dates)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATE\tCHUNKS DONE\tEVENTS\tSTATE")
	for _, d := range dates {
		r := rows[d]
		state := "open"
		if r.closed {
			state = "closed"
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%s\n", d, r.done, r.chunks, r.events, state)
	}
	return tw.Flush()
}

// printSessions summarises the recording jobs and lists unfinished ones.
func printSessions(st *position.Store, w io.Writer) {
	var done, gaveUp int
	var pending []position.Session
	for _, k := range st.Keys(position.PrefixSession) {
		var ss position.Session
		if _, err := st.Get(k, &ss); err != nil {
			continue
		}
		switch {
		case ss.Done:
			done++
		case ss.GaveUp:
			gaveUp++
		default:
			pending = append(pending, ss)
		}
	}
	fmt.Fprintf(w, "\nSession jobs: %d done, %d given up, %d pending\n", done, gaveUp, len(pending))
	slices.SortFunc(pending, func(a, b position.Session) int { return a.FirstSeen.Compare(b.FirstSeen) })
	for i, ss := range pending {
		if i == 20 {
			fmt.Fprintf(w, "  … and %d more\n", len(pending)-20)
			break
		}
		fmt.Fprintf(w, "  %s  next index %d, uploaded %s\n", ss.SessionID, ss.Next, ss.FirstSeen.UTC().Format(time.RFC3339))
	}
}
