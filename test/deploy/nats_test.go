package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/fluentd"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/ingest"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/sink"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func auditEvent(i int) bus.Event {
	id := fmt.Sprintf("ev-%03d", i)
	return bus.Event{
		ID:   id,
		Type: "user.login",
		Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Second),
		JSON: []byte(fmt.Sprintf(`{"event":"user.login","uid":%q,"user":"alice","time":"2025-01-02T03:04:05.000Z"}`, id)),
	}
}

// publishAll publishes events through a bus.Publisher and fails the test on
// any publish that JetStream did not acknowledge.
func publishAll(ctx context.Context, t *testing.T, b *bus.Bus, events []bus.Event) {
	t.Helper()
	pub := bus.NewPublisher(b.JS, 16, bus.WithAckTimeout(5*time.Second), bus.WithRetries(20, 250*time.Millisecond))
	var mu sync.Mutex
	var errs []error
	for _, e := range events {
		err := pub.Publish(ctx, e, func(_ *jetstream.PubAck, err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
		if err != nil {
			t.Fatalf("publish %s: %v", e.ID, err)
		}
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatalf("flush publisher: %v", err)
	}
	if len(errs) > 0 {
		t.Fatalf("%d of %d publishes failed, first: %v", len(errs), len(events), errs[0])
	}
}

// openAs connects to the cluster as user through pkg/bus, logging into logs.
func openAs(ctx context.Context, t *testing.T, c *harness.NATSCluster, user string, logs *logtest.Buffer) *bus.Bus {
	t.Helper()
	b, err := bus.Open(ctx, c.NATSConfig(user), "", user, zerolog.New(logs), false)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(b.Close)
	return b
}

// isPermissionDenied reports whether err, or the connection's logged
// asynchronous errors, say the server refused the operation.
func isPermissionDenied(err error, logs *logtest.Buffer) bool {
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "permission") {
		return true
	}
	return strings.Contains(strings.ToLower(logs.String()), "permissions violation")
}

// TestNATSClusterRoles starts the 3-node cluster configure --nats-cluster
// writes (the generator of deploy/nats: TLS on client and route
// connections, the NKey users of accounts.conf) as real processes and checks what each role may do, then that publishing goes on
// with one node killed.
func TestNATSClusterRoles(t *testing.T) {
	ctx, cluster := startCluster(t, 240*time.Second)

	// ingest: creates the R3 streams and the state bucket, publishes.
	ingestLogs := &logtest.Buffer{}
	ing := openAs(ctx, t, cluster, harness.NATSUserIngest, ingestLogs)
	if err := ing.EnsureStreams(ctx); err != nil {
		t.Fatalf("ingest user: ensure streams: %v", err)
	}
	kv, err := ing.State(ctx)
	if err != nil {
		t.Fatalf("ingest user: state bucket: %v", err)
	}
	if _, err := kv.Put(ctx, bus.LeaseKey, []byte("ingest-1")); err != nil {
		t.Fatalf("ingest user: put lease: %v", err)
	}
	if e, err := kv.Get(ctx, bus.LeaseKey); err != nil || string(e.Value()) != "ingest-1" {
		t.Fatalf("ingest user: get lease: %v", err)
	}
	// Listing keys and watching (ordered consumers on the bucket's stream),
	// as ingest does for export chunks and ingest status.
	if _, err := kv.Put(ctx, bus.ChunkKey("2025-01-02", "c/1"), []byte(`{}`)); err != nil {
		t.Fatalf("ingest user: put chunk key: %v", err)
	}
	// A key list right after a put may miss it on a cluster (the ordered
	// consumer can be served by a replica that has not applied the put yet),
	// so this polls; it checks permissions, not timing.
	var keys []string
	waitFor(t, 10*time.Second, "the chunk key in the key list", func() bool {
		lister, err := kv.ListKeysFiltered(ctx, bus.ChunkKeyPrefix("2025-01-02")+">")
		if err != nil {
			t.Fatalf("ingest user: list keys: %v", err)
		}
		keys = keys[:0]
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		return len(keys) == 1 && keys[0] == bus.ChunkKey("2025-01-02", "c/1")
	})
	if err := kv.Delete(ctx, bus.ChunkKey("2025-01-02", "c/1")); err != nil {
		t.Fatalf("ingest user: delete key: %v", err)
	}
	const first = 20
	var events []bus.Event
	for i := range first {
		events = append(events, auditEvent(i))
	}
	publishAll(ctx, t, ing, events)
	for _, name := range []string{ing.Cfg.AuditStream, ing.Cfg.SessionStream, bus.DeadLetterStream(ing.Cfg)} {
		info, err := ing.StreamInfo(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, info.Config.Replicas)
		}
	}
	if info, err := ing.StreamInfo(ctx, ing.Cfg.AuditStream); err != nil {
		t.Fatalf("ingest user: audit stream info: %v", err)
	} else if info.State.Msgs != first {
		t.Fatalf("audit stream holds %d messages, want %d", info.State.Msgs, first)
	}
	// As ingest with exit-on-last-event does: the sink's exit waits for it.
	if _, err := ing.MarkCaughtUp(ctx, kv); err != nil {
		t.Fatalf("ingest user: %v", err)
	}

	// fluentd-sink: the real sink pipeline, logged in as the sink user,
	// consumes and acks through its durables and dead-letters a refused
	// event; the user cannot publish events.
	sinkLogs := &logtest.Buffer{}
	snk := openAs(ctx, t, cluster, harness.NATSUserSink, sinkLogs)
	if err := snk.EnsureStreams(ctx); err != nil {
		t.Fatalf("sink user: streams exist, EnsureStreams must only look: %v", err)
	}
	cfg := config.Default()
	cfg.NATS = snk.Cfg
	cfg.Fluentd.URL = "https://fluentd.example/test.log"
	cfg.Fluentd.SessionURL = "https://fluentd.example/session"
	cfg.Sink.MaxDeliver = 1
	cfg.ExitOnLastEvent = true
	fd := &fakeFluentd{refuse: "ev-003"}
	runSink := func(b *bus.Bus) {
		t.Helper()
		if err := sink.New(b.JS, b.Conn, fd, &cfg, zerolog.New(sinkLogs)).Run(ctx); err != nil {
			t.Fatalf("sink user: sink: %v\n%s\n%s", err, sinkLogs.String(), cluster.Tails(15))
		}
	}
	// restartingSink runs the sink like a supervisor (systemd's
	// Restart=on-failure, a Kubernetes Deployment) does: a new process, on
	// a new connection, after each failure, until want events arrived.
	restartingSink := func(want int) {
		t.Helper()
		for attempt := 1; fd.count() < want; attempt++ {
			if attempt > 6 {
				t.Fatalf("after %d sink starts, fluentd has %d events, want %d\n%s", attempt-1, fd.count(), want, cluster.Tails(15))
			}
			actx, cancel := context.WithTimeout(ctx, 15*time.Second)
			b, err := bus.Open(actx, cluster.NATSConfig(harness.NATSUserSink), "", "fluentd-sink", zerolog.New(sinkLogs), false)
			if err == nil {
				err = sink.New(b.JS, b.Conn, fd, &cfg, zerolog.New(sinkLogs)).Run(actx)
				b.Close()
			}
			cancel()
			if err != nil {
				t.Logf("sink start %d failed (a supervisor restarts it): %v", attempt, err)
			}
		}
	}
	runSink(snk)
	if n := fd.count(); n != first-1 {
		t.Fatalf("sink user: fluentd got %d events, want %d", n, first-1)
	}
	if info, err := ing.StreamInfo(ctx, bus.DeadLetterStream(ing.Cfg)); err != nil || info.State.Msgs != 1 {
		t.Fatalf("dead-letter stream after one refusal: %v, %+v", err, info)
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = snk.JS.Publish(pctx, "audit.user.login", []byte(`{}`))
	pcancel()
	if err == nil {
		t.Fatal("sink user published to audit.user.login")
	}
	waitFor(t, 5*time.Second, "the sink's permission violation", func() bool { return isPermissionDenied(err, sinkLogs) })

	// reader: reads through a consumer of its own, cannot publish or use
	// the sink's consumer.
	readerLogs := &logtest.Buffer{}
	rd := openAs(ctx, t, cluster, harness.NATSUserReader, readerLogs)
	rc, err := rd.JS.CreateOrUpdateConsumer(ctx, rd.Cfg.AuditStream, jetstream.ConsumerConfig{
		Durable: "siem", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatalf("reader: create consumer: %v", err)
	}
	consumeAndAck(ctx, t, rc, first)
	pctx, pcancel = context.WithTimeout(ctx, 2*time.Second)
	_, err = rd.JS.Publish(pctx, "audit.user.login", []byte(`{}`))
	pcancel()
	if err == nil {
		t.Fatal("reader published to audit.user.login")
	}
	waitFor(t, 5*time.Second, "the reader's permission violation", func() bool { return isPermissionDenied(err, readerLogs) })
	if _, err := rd.JS.Consumer(short(t, ctx), rd.Cfg.AuditStream, cfg.Sink.AuditConsumer); err == nil {
		t.Error("reader can use the sink's consumer")
	}
	if info, err := ing.StreamInfo(ctx, ing.Cfg.AuditStream); err != nil {
		t.Fatalf("ingest user: audit stream info: %v", err)
	} else if info.State.Msgs != first {
		t.Fatalf("audit stream holds %d messages after the refused publishes, want %d", info.State.Msgs, first)
	}

	// Every role as the embedded server checks it (the same permissions):
	// no user refused, the sink and the reader cannot publish, delete,
	// purge or touch what is not theirs, and the stream stays as it was.
	harness.CheckRoles(ctx, t, harness.RoleClients{
		Config: func(role bus.Role) config.NATSConfig { return cluster.NATSConfig(string(role)) },
		Sink:   cfg.Sink,
	})

	// No user, and an NKey the cluster does not know: refused.
	stranger, _, err := bus.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	strangerFile := filepath.Join(t.TempDir(), "stranger.nk")
	if err := os.WriteFile(strangerFile, stranger, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, nc := range map[string]config.NATSConfig{
		"no user": cluster.NATSConfig(""),
		"unknown nkey": func() config.NATSConfig {
			c := cluster.NATSConfig(harness.NATSUserIngest)
			c.NKey = strangerFile
			return c
		}(),
	} {
		conn, err := bus.Connect(ctx, nc, "anonymous", zerolog.Nop())
		if err == nil {
			conn.Close()
			t.Fatalf("%s: connected", name)
		}
		if !strings.Contains(err.Error(), "NATS refused the credentials") {
			t.Errorf("%s: error %q does not say the credentials were refused", name, err)
		}
	}

	// Kill one node: ingest keeps publishing, the sink keeps reading.
	cluster.Kill(0)
	var more []bus.Event
	for i := first; i < first+10; i++ {
		more = append(more, auditEvent(i))
	}
	publishAll(ctx, t, ing, more)
	// The sink may have to be restarted while the cluster elects new
	// leaders: creating its consumer can go unanswered then.
	if err := cluster.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	restartingSink(first - 1 + len(more))
	if n := fd.count(); n != first-1+len(more) {
		t.Fatalf("after a node loss, fluentd has %d events, want %d", n, first-1+len(more))
	}
}

// fakeFluentd accepts every record except those whose uid is refuse, which
// it refuses like Fluentd's 400, and counts distinct records.
type fakeFluentd struct {
	refuse string
	mu     sync.Mutex
	seen   map[string]bool
}

func (f *fakeFluentd) Send(_ context.Context, url string, records []json.RawMessage) (fluentd.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	for _, r := range records {
		var ev struct {
			UID string `json:"uid"`
		}
		_ = json.Unmarshal(r, &ev)
		if ev.UID == f.refuse {
			res := fluentd.Result{Status: 400, Answer: "400 Bad Request\ninvalid time format"}
			return res, &fluentd.RefusedError{URL: url, Result: res, Records: len(records)}
		}
	}
	for _, r := range records {
		f.seen[string(r)] = true
	}
	return fluentd.Result{Status: 200}, nil
}

func (f *fakeFluentd) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

// transient reports a fetch error that clears by itself: no consumer leader
// yet (no responders), a reconnect, a timeout.
func transient(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrTimeout)
}

// short bounds a request the server is expected to refuse: NATS drops a
// request the user may not publish, so only the deadline ends it.
func short(t *testing.T, ctx context.Context) context.Context {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// consumeAndAck fetches n messages from c and acknowledges each, waiting for
// the server to confirm the ack.
func consumeAndAck(ctx context.Context, t *testing.T, c jetstream.Consumer, n int) []jetstream.Msg {
	t.Helper()
	var got []jetstream.Msg
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fetched %d of %d messages", len(got), n)
		}
		batch, err := c.Fetch(n-len(got), jetstream.FetchMaxWait(2*time.Second))
		if transient(err) {
			time.Sleep(50 * time.Millisecond) // a new consumer's leader is being elected
			continue
		}
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ack %s: %v", m.Subject(), err)
			}
			got = append(got, m)
		}
		if err := batch.Error(); err != nil && !transient(err) {
			t.Fatalf("fetch: %v", err)
		}
	}
	return got
}

// TestNATSClusterIngestUser runs the real ingest pipeline, logged in as the
// ingest user of the cluster's accounts.conf, against the cluster and a
// Teleport test server: every NATS operation it needs (streams, the state
// bucket, the lease, export and session progress) must be allowed.
func TestNATSClusterIngestUser(t *testing.T) {
	ctx, cluster := startCluster(t, 120*time.Second)

	now := time.Now().UTC()
	sim, err := teleportsim.Start(ctx, teleportsim.Options{Seed: 8, Events: 120, Sessions: 3, From: now.Add(-26 * time.Hour), To: now})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dir := t.TempDir()
	identity, err := sim.WriteIdentity(dir, "ingest", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Teleport = config.TeleportConfig{Addr: []string{sim.Addr()}, Identity: identity, ConnectRetries: 3}
	cfg.NATS = cluster.NATSConfig(harness.NATSUserIngest)
	cfg.Ingest.LeaseTTL = 3 * time.Second
	cfg.Ingest.MetricsAddr = "127.0.0.1:0"
	cfg.Storage = filepath.Join(dir, "storage")
	cfg.StartTime = now.Add(-27 * time.Hour).Truncate(time.Second)
	cfg.Timeout = 200 * time.Millisecond
	cfg.ExitOnLastEvent = true
	logs := &logtest.Buffer{}
	if err := ingest.Run(ctx, &cfg, zerolog.New(logs)); err != nil {
		t.Fatalf("ingest as user %s: %v\n%s", harness.NATSUserIngest, err, logs.String())
	}
	if strings.Contains(strings.ToLower(logs.String()), "permissions violation") {
		t.Fatalf("ingest hit a permissions violation:\n%s", logs.String())
	}

	rd := openAs(ctx, t, cluster, harness.NATSUserReader, &logtest.Buffer{})
	audit, err := rd.StreamInfo(ctx, rd.Cfg.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if audit.State.Msgs != 120 {
		t.Errorf("audit stream holds %d events, want the 120 Teleport has", audit.State.Msgs)
	}
	sessions, err := rd.StreamInfo(ctx, rd.Cfg.SessionStream)
	if err != nil {
		t.Fatal(err)
	}
	if sessions.State.Msgs == 0 {
		t.Error("no session recording events in the session stream")
	}
}

// startCluster builds the module's nats-server and starts configure's
// cluster with it, stopped at the end of the test; the context ends after
// timeout.
func startCluster(t *testing.T, timeout time.Duration) (context.Context, *harness.NATSCluster) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	binDir := t.TempDir()
	if err := harness.Build(ctx, binDir, "nats-server"); err != nil {
		t.Fatal(err)
	}
	cluster, err := harness.StartNATSCluster(ctx, binDir+"/nats-server", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	return ctx, cluster
}

// TestStatusNamesUnansweredConsumers kills the node that holds a consumer
// (one replica, as ingest's scan consumers have): `ingest status` still
// prints every stream and consumer, and names that one as unknown. Before,
// status used nats.go's listing, which drops the names the server gives of
// consumers that did not answer, and whose 5 s timeout could end before
// the server's own 4 s wait for them: after a node loss the listing failed
// ("list consumers of stream …: context deadline exceeded") or left the
// consumer out (the listing waited here until its context ended); and a
// stream info asked during a stream's election went unanswered, so
// status run right after a node loss failed in 2 of 3 runs ("stream
// \"TELEPORT_SESSIONS\": context deadline exceeded").
func TestStatusNamesUnansweredConsumers(t *testing.T) {
	ctx, cluster := startCluster(t, 3*time.Minute)
	ing := openAs(ctx, t, cluster, harness.NATSUserIngest, &logtest.Buffer{})
	if err := ing.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	publishAll(ctx, t, ing, []bus.Event{auditEvent(1), auditEvent(2)})
	lone := bus.ScanConsumerName(1)
	c, err := ing.JS.CreateConsumer(ctx, ing.Cfg.AuditStream, jetstream.ConsumerConfig{
		Name: lone, Replicas: 1, MemoryStorage: true, AckPolicy: jetstream.AckNonePolicy, HeadersOnly: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	host := ""
	if ci := c.CachedInfo(); ci.Cluster != nil {
		host = ci.Cluster.Leader
	}
	victim := -1
	for i, n := range cluster.Nodes {
		if n.Name == host {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("consumer %s: its server %q is not one of the cluster's nodes", lone, host)
	}
	// Status runs right away, while the cluster elects new leaders for
	// what the node led.
	cluster.Kill(victim)

	cfg := config.Default()
	cfg.NATS = cluster.NATSConfig(harness.NATSUserIngest)
	var out strings.Builder
	// A minute and a half: the elections, then the server's 4 s wait for
	// the lost node.
	sctx, scancel := context.WithTimeout(ctx, 90*time.Second)
	defer scancel()
	if err := ingest.Status(sctx, &cfg, &out); err != nil {
		t.Fatalf("ingest status after %s (which held %s) was killed: %v\n%s", host, lone, err, out.String())
	}
	var row string
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == lone {
			row = l
		}
	}
	if !strings.Contains(row, ing.Cfg.AuditStream) || !strings.Contains(row, "unknown:") {
		t.Fatalf("ingest status after %s (which held %s) was killed: want a row naming %s as unknown, got %q in:\n%s", host, lone, lone, row, out.String())
	}
	if !strings.Contains(out.String(), "TELEPORT_AUDIT  ") {
		t.Errorf("ingest status does not list the audit stream:\n%s", out.String())
	}
}
