package bus

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func TestStateCreateAndReopen(t *testing.T) {
	storage := t.TempDir()
	b := openTestBusIn(t, config.NATSConfig{StateBucket: "state"}, storage)
	ctx := testCtx(t)
	kv, err := b.State(ctx)
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if _, err := kv.Put(ctx, ChunkKey("2026-11-25", "chunk/1"), []byte("cursor-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, ChunkKey("2026-11-25", "chunk/1"), []byte("cursor-2")); err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 || st.Bucket() != "state" || st.Values() != 1 {
		t.Fatalf("bucket %q history %d values %d; want state, 1, 1", st.Bucket(), st.History(), st.Values())
	}
	info, err := b.StreamInfo(ctx, "KV_state")
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("state bucket storage %s, want file", info.Config.Storage)
	}

	// A restart over the same storage finds the value.
	b.Close()
	b2 := openTestBusIn(t, config.NATSConfig{StateBucket: "state"}, storage)
	kv2, err := b2.State(ctx)
	if err != nil {
		t.Fatalf("State after restart: %v", err)
	}
	e, err := kv2.Get(ctx, ChunkKey("2026-11-25", "chunk/1"))
	if err != nil || string(e.Value()) != "cursor-2" {
		t.Fatalf("after restart: %v %q", err, e)
	}
}

var validKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func TestStateKeys(t *testing.T) {
	keys := map[string]string{
		CursorKey("search"):             "cursor.search",
		ChunkKey("2026-11-25", "abc"):   "chunk.2026-11-25.abc",
		DateKey("2026-11-25"):           "date.2026-11-25",
		SessionKey("4b5e-11"):           "session.4b5e-11",
		LockCounterKey("alice", "root"): "lock.alice.root",
		LockCounterKey("a b", "x.y"):    "lock.a=20b.x=2Ey",
		LockCounterKey("", "ü"):         "lock.=.=C3=BC",
		ChunkKey("d", "a/b=c"):          "chunk.d.a=2Fb=3Dc",
		LeaseKey:                        "ingest.lease",
		StartTimeKey:                    "ingest.start_time",
	}
	for got, want := range keys {
		if got != want {
			t.Errorf("key %q, want %q", got, want)
		}
		if !validKey.MatchString(got) || strings.Contains(got, "..") || strings.HasSuffix(got, ".") {
			t.Errorf("key %q is not a valid KV key", got)
		}
	}
	if LockCounterKey("a_b", "x") == LockCounterKey("a b", "x") {
		t.Error("different users share a lock counter key")
	}
	for _, s := range []string{"", "plain", "a b.c/d=e", "ログイン", "=41"} {
		got, err := DecodeKeyToken(KeyToken(s))
		if err != nil || got != s {
			t.Errorf("DecodeKeyToken(KeyToken(%q)) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"=", "=4", "=ZZ"} {
		if bad == "=" {
			continue // the empty string
		}
		if _, err := DecodeKeyToken(bad); err == nil {
			t.Errorf("DecodeKeyToken(%q) succeeded", bad)
		}
	}
}
