package harness

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
)

// RoleClients says how a client of each role connects to a closed bus:
// Config(bus.RoleIngest) and so on, and Config("") for a client without
// credentials. Sink names the sink's durable consumers.
type RoleClients struct {
	Config func(role bus.Role) config.NATSConfig
	Sink   config.SinkConfig
}

// refusedWait bounds a request the server is expected to drop: NATS does
// not answer a publish the user may not make, so only this deadline ends it.
const refusedWait = 2 * time.Second

// roleClient is one connection of a role, with the log its asynchronous
// errors (the server's permission violations) go to.
type roleClient struct {
	role bus.Role
	b    *bus.Bus
	logs *logtest.Buffer
}

func connectRole(ctx context.Context, t *testing.T, rc RoleClients, role bus.Role) *roleClient {
	t.Helper()
	logs := &logtest.Buffer{}
	b, err := bus.Open(ctx, rc.Config(role), "", "roles-"+string(role), zerolog.New(logs), false)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(b.Close)
	return &roleClient{role: role, b: b, logs: logs}
}

// refused checks that op fails and that the server reported a permissions
// violation for subject: the request was refused, not lost.
func (c *roleClient) refused(ctx context.Context, t *testing.T, what, subject string, op func(ctx context.Context) error) {
	t.Helper()
	octx, cancel := context.WithTimeout(ctx, refusedWait)
	err := op(octx)
	cancel()
	if err == nil {
		t.Errorf("%s: %s succeeded", c.role, what)
		return
	}
	want := strings.ToLower(`permissions violation for publish to \"` + subject + `\"`) // as JSON-escaped in the log
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(strings.ToLower(c.logs.String()), want) {
		if time.Now().After(deadline) {
			t.Errorf("%s: %s failed (%v), but the server reported no permissions violation for %s", c.role, what, err, subject)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckRoles checks what each role of a closed bus may do, as a user would
// see it, and as an attacker holding one role's credentials would try: no
// role can delete, update, reset, re-point, pause or pull from a consumer
// of another role (the sink's durable, the lock watcher's, ingest's scan
// consumers, a reader's), nor delete, purge, snapshot, restore or step
// down any stream or the state bucket, delete a message, or create a
// stream of its own; only ingest may change the streams' limits. A client
// without credentials is refused; the sink cannot publish
// an audit event, delete, purge or change a stream, delete the state
// bucket, read or write any state key but the caught-up one, or touch a
// consumer not its own; the reader reads through a consumer of its own,
// sees the dead letters, and cannot publish or delete; and after all of it the audit stream holds the
// same messages up to the same last sequence. The streams must exist and
// hold at least one audit event, and the state bucket must exist.
func CheckRoles(ctx context.Context, t *testing.T, rc RoleClients) {
	t.Helper()
	if _, err := bus.Connect(ctx, rc.Config(""), "anonymous", zerolog.Nop()); err == nil {
		t.Error("a client without credentials connected")
	} else if !strings.Contains(err.Error(), "NATS refused the credentials") {
		t.Errorf("a client without credentials: error %q does not say NATS refused it", err)
	}

	ing := connectRole(ctx, t, rc, bus.RoleIngest)
	names := bus.NamesFor(ing.b.Cfg, rc.Sink)
	before, err := ing.b.StreamInfo(ctx, names.AuditStream)
	if err != nil {
		t.Fatalf("ingest: %v", err)
	}
	if before.State.Msgs == 0 {
		t.Fatal("the audit stream is empty; CheckRoles needs events to read")
	}
	kv, err := ing.b.State(ctx)
	if err != nil {
		t.Fatalf("ingest: state bucket: %v", err)
	}
	const otherKey = "roles-check-other"
	// The caught-up mark, unless ingest wrote one already.
	if _, err := kv.Create(ctx, "caught-up", []byte("roles-check")); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		t.Fatalf("ingest: create caught-up: %v", err)
	}
	if _, err := kv.Put(ctx, otherKey, []byte("secret-cursor")); err != nil {
		t.Fatalf("ingest: put %s: %v", otherKey, err)
	}

	clients := map[bus.Role]*roleClient{
		bus.RoleIngest: ing,
		bus.RoleSink:   connectRole(ctx, t, rc, bus.RoleSink),
		bus.RoleReader: connectRole(ctx, t, rc, bus.RoleReader),
	}
	victims := makeVictims(ctx, t, clients, names)
	checkAttacks(ctx, t, attacksOn(names, victims), clients)
	checkVictimsIntact(ctx, t, ing, victims)
	removeVictims(ctx, t, victims)

	checkSink(ctx, t, rc, names)
	checkReader(ctx, t, rc, names)

	after, err := ing.b.StreamInfo(ctx, names.AuditStream)
	if err != nil {
		t.Fatalf("ingest: %v", err)
	}
	if after.State.Msgs != before.State.Msgs || after.State.LastSeq != before.State.LastSeq {
		t.Errorf("audit stream changed under the refused operations: %d messages, last seq %d; before: %d, %d",
			after.State.Msgs, after.State.LastSeq, before.State.Msgs, before.State.LastSeq)
	}
	if e, err := kv.Get(ctx, otherKey); err != nil || string(e.Value()) != "secret-cursor" {
		t.Errorf("state key %s after the refused writes: %v", otherKey, err)
	}
	if err := kv.Delete(ctx, otherKey); err != nil {
		t.Errorf("ingest: delete %s: %v", otherKey, err)
	}
}

func checkSink(ctx context.Context, t *testing.T, rc RoleClients, n bus.AuthNames) {
	t.Helper()
	snk := connectRole(ctx, t, rc, bus.RoleSink)
	js := snk.b.JS
	// Its consumer as it is (a running sink's), or a new one.
	cons, err := js.Consumer(ctx, n.AuditStream, n.SinkAuditConsumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = js.CreateOrUpdateConsumer(ctx, n.AuditStream, jetstream.ConsumerConfig{
			Durable: n.SinkAuditConsumer, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
	}
	if err != nil {
		t.Fatalf("sink: its consumer: %v", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatalf("sink: its consumer's info: %v", err)
	}
	if info.NumPending > 0 {
		if got := fetchAck(ctx, t, cons, 1); got != 1 {
			t.Errorf("sink: read %d messages through its consumer, want 1", got)
		}
	}
	if _, err := js.Publish(ctx, bus.DeadLetterSubject("audit.roles.check"), []byte(`{}`)); err != nil {
		t.Errorf("sink: publish a dead letter: %v", err)
	}
	kv, err := js.KeyValue(ctx, n.StateBucket)
	if err != nil {
		t.Fatalf("sink: bind the state bucket: %v", err)
	}
	if e, err := kv.Get(ctx, "caught-up"); err != nil || len(e.Value()) == 0 {
		t.Errorf("sink: get caught-up: %v", err)
	}

	kvStream := "KV_" + n.StateBucket
	snk.refused(ctx, t, "publish an audit event", "audit.user.login", func(ctx context.Context) error {
		_, err := js.Publish(ctx, "audit.user.login", []byte(`{"event":"user.login","uid":"forged-by-sink"}`))
		return err
	})
	snk.refused(ctx, t, "delete the audit stream", "$JS.API.STREAM.DELETE."+n.AuditStream, func(ctx context.Context) error {
		return js.DeleteStream(ctx, n.AuditStream)
	})
	snk.refused(ctx, t, "purge the audit stream", "$JS.API.STREAM.PURGE."+n.AuditStream, func(ctx context.Context) error {
		s, err := js.Stream(ctx, n.AuditStream)
		if err != nil {
			return err
		}
		return s.Purge(ctx)
	})
	snk.refused(ctx, t, "change the audit stream", "$JS.API.STREAM.UPDATE."+n.AuditStream, func(ctx context.Context) error {
		s, err := js.Stream(ctx, n.AuditStream)
		if err != nil {
			return err
		}
		cfg := s.CachedInfo().Config
		cfg.MaxMsgs = 1
		_, err = js.UpdateStream(ctx, cfg)
		return err
	})
	snk.refused(ctx, t, "delete the state bucket", "$JS.API.STREAM.DELETE."+kvStream, func(ctx context.Context) error {
		return js.DeleteKeyValue(ctx, n.StateBucket)
	})
	snk.refused(ctx, t, "read another state key", "$JS.API.DIRECT.GET."+kvStream+".$KV."+n.StateBucket+".roles-check-other", func(ctx context.Context) error {
		_, err := kv.Get(ctx, "roles-check-other")
		return err
	})
	snk.refused(ctx, t, "write a state key", "$KV."+n.StateBucket+".caught-up", func(ctx context.Context) error {
		_, err := kv.Put(ctx, "caught-up", []byte("forged"))
		return err
	})
	snk.refused(ctx, t, "delete the lock watcher's consumer", "$JS.API.CONSUMER.DELETE."+n.AuditStream+"."+n.LockConsumer, func(ctx context.Context) error {
		return js.DeleteConsumer(ctx, n.AuditStream, n.LockConsumer)
	})
	snk.refused(ctx, t, "create a consumer not its own", "$JS.API.CONSUMER.CREATE."+n.AuditStream+".sink-other", func(ctx context.Context) error {
		_, err := js.CreateOrUpdateConsumer(ctx, n.AuditStream, jetstream.ConsumerConfig{Durable: "sink-other", AckPolicy: jetstream.AckExplicitPolicy})
		return err
	})
}

func checkReader(ctx context.Context, t *testing.T, rc RoleClients, n bus.AuthNames) {
	t.Helper()
	rd := connectRole(ctx, t, rc, bus.RoleReader)
	js := rd.b.JS
	for _, stream := range []string{n.AuditStream, n.SessionStream} {
		if _, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: "roles-reader", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		}); err != nil {
			t.Errorf("reader: create a consumer on %s: %v", stream, err)
		}
	}
	cons, err := js.Consumer(ctx, n.AuditStream, "roles-reader")
	if err != nil {
		t.Fatalf("reader: its consumer: %v", err)
	}
	if got := fetchAck(ctx, t, cons, 1); got != 1 {
		t.Errorf("reader: read %d messages through its consumer, want 1", got)
	}
	rd.refused(ctx, t, "publish an audit event", "audit.user.login", func(ctx context.Context) error {
		_, err := js.Publish(ctx, "audit.user.login", []byte(`{"event":"user.login","uid":"forged-by-reader"}`))
		return err
	})
	rd.refused(ctx, t, "publish a dead letter", "deadletter.audit.user.login", func(ctx context.Context) error {
		_, err := js.Publish(ctx, "deadletter.audit.user.login", []byte(`{}`))
		return err
	})
	rd.refused(ctx, t, "delete the audit stream", "$JS.API.STREAM.DELETE."+n.AuditStream, func(ctx context.Context) error {
		return js.DeleteStream(ctx, n.AuditStream)
	})
	rd.refused(ctx, t, "purge the session stream", "$JS.API.STREAM.PURGE."+n.SessionStream, func(ctx context.Context) error {
		s, err := js.Stream(ctx, n.SessionStream)
		if err != nil {
			return err
		}
		return s.Purge(ctx)
	})
	rd.refused(ctx, t, "delete the state bucket", "$JS.API.STREAM.DELETE.KV_"+n.StateBucket, func(ctx context.Context) error {
		return js.DeleteKeyValue(ctx, n.StateBucket)
	})
	rd.refused(ctx, t, "read the state bucket", "$JS.API.STREAM.INFO.KV_"+n.StateBucket, func(ctx context.Context) error {
		_, err := js.KeyValue(ctx, n.StateBucket)
		return err
	})
	rd.refused(ctx, t, "delete the sink's consumer", "$JS.API.CONSUMER.DELETE."+n.AuditStream+"."+n.SinkAuditConsumer, func(ctx context.Context) error {
		return js.DeleteConsumer(ctx, n.AuditStream, n.SinkAuditConsumer)
	})
	rd.refused(ctx, t, "pull from the sink's consumer", "$JS.API.CONSUMER.INFO."+n.AuditStream+"."+n.SinkAuditConsumer, func(ctx context.Context) error {
		_, err := js.Consumer(ctx, n.AuditStream, n.SinkAuditConsumer)
		return err
	})
	if _, err := js.Stream(ctx, n.DeadLetterStream); err != nil {
		t.Errorf("reader: look at the dead letters: %v", err)
	}
	for _, stream := range []string{n.AuditStream, n.SessionStream} {
		if err := js.DeleteConsumer(ctx, stream, "roles-reader"); err != nil {
			t.Errorf("reader: delete its own consumer on %s: %v", stream, err)
		}
	}
}

// fetchAck fetches up to n messages from c and acknowledges each, waiting
// for the server to confirm; it returns how many it got.
func fetchAck(ctx context.Context, t *testing.T, c jetstream.Consumer, n int) int {
	t.Helper()
	got := 0
	deadline := time.Now().Add(30 * time.Second)
	for got < n && time.Now().Before(deadline) {
		batch, err := c.Fetch(n-got, jetstream.FetchMaxWait(2*time.Second))
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) {
			continue // a new consumer's leader is still being elected
		}
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ack %s: %v", m.Subject(), err)
			}
			got++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("fetch: %v", err)
		}
	}
	return got
}
