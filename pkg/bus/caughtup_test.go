package bus

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// TestCaughtUpKeyReadWithOnlyItsSubjects: ingest marks itself caught up
// with the streams' last sequences; a reader allowed to publish to only
// the key's DIRECT.GET subject reads it, and sees nothing once ingest
// clears it.
func TestCaughtUpKeyReadWithOnlyItsSubjects(t *testing.T) {
	const bucket = "state"
	opts := &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{
			{Username: "ingest", Password: "ingest-pw"},
			{Username: "sink", Password: "sink-pw", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{
					"$JS.API.DIRECT.GET.KV_" + bucket + ".$KV." + bucket + "." + CaughtUpKey,
				}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	ctx := testCtx(t)

	sinkConn, err := nats.Connect(srv.ClientURL(), nats.UserInfo("sink", "sink-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer sinkConn.Close()
	r := &CaughtUpReader{NC: sinkConn, Bucket: bucket}
	if cu, err := r.Read(ctx); err != nil || cu != nil {
		t.Fatalf("before the bucket exists: %+v, %v; want nothing", cu, err)
	}

	b, err := Open(ctx, config.NATSConfig{URL: srv.ClientURL(), User: "ingest", Password: "ingest-pw", StateBucket: bucket}, "", "ingest", zerolog.Nop(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	kv, err := b.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := b.JS.Publish(ctx, AuditPrefix+".user.login", []byte{byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if cu, err := r.Read(ctx); err != nil || cu != nil {
		t.Fatalf("before ingest caught up: %+v, %v; want nothing", cu, err)
	}
	marked, err := b.MarkCaughtUp(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	cu, err := r.Read(ctx)
	if err != nil {
		t.Fatalf("read with the sink's permissions: %v", err)
	}
	if cu == nil || cu.Streams[b.Cfg.AuditStream] != 3 || cu.Streams[b.Cfg.SessionStream] != 0 || len(cu.Streams) != 2 {
		t.Fatalf("caught-up = %+v, want audit 3, sessions 0", cu)
	}
	if !cu.Time.Equal(marked.Time) {
		t.Errorf("time %s, want %s", cu.Time, marked.Time)
	}
	if err := ClearCaughtUp(ctx, kv); err != nil {
		t.Fatal(err)
	}
	if cu, err := r.Read(ctx); err != nil || cu != nil {
		t.Fatalf("after ingest cleared it: %+v, %v; want nothing", cu, err)
	}
}
