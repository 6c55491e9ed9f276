package bus

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func TestEnsureStreamsIdempotent(t *testing.T) {
	cfg := config.NATSConfig{AuditStream: "A", SessionStream: "S", MaxAge: time.Hour, MaxBytes: 1 << 30, MaxMsgSize: 1 << 20, DuplicateWindow: 5 * time.Minute}
	b := openTestBus(t, cfg)
	ctx := testCtx(t)
	for i := range 2 {
		if err := b.EnsureStreams(ctx); err != nil {
			t.Fatalf("EnsureStreams #%d: %v", i+1, err)
		}
	}
	infos, err := b.StreamInfos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "audit.>", "S": "session.>", "A_DEADLETTER": "deadletter.>"}
	if len(infos) != len(want) {
		t.Fatalf("got %d streams, want %d", len(infos), len(want))
	}
	for _, info := range infos {
		c := info.Config
		if want[c.Name] != strings.Join(c.Subjects, ",") {
			t.Errorf("stream %s subjects %v, want %s", c.Name, c.Subjects, want[c.Name])
		}
		dups := 5 * time.Minute // the setting
		if c.Name == "A_DEADLETTER" {
			dups = DeadLetterDuplicates // its own, whatever the setting
		}
		if c.Storage != jetstream.FileStorage || c.MaxAge != time.Hour || c.MaxBytes != 1<<30 ||
			c.MaxMsgSize != 1<<20 || c.Duplicates != dups || c.Replicas != 1 {
			t.Errorf("stream %s config %+v does not match the settings", c.Name, c)
		}
	}
}

func TestEnsureStreamsUpdatesLimits(t *testing.T) {
	storage := t.TempDir()
	b := openTestBusIn(t, config.NATSConfig{MaxAge: time.Hour}, storage)
	ctx := testCtx(t)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	b.Cfg.MaxAge = 2 * time.Hour
	b.Cfg.MaxMsgSize = 512 << 10
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatalf("compatible change refused: %v", err)
	}
	info, err := b.StreamInfo(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 2*time.Hour || info.Config.MaxMsgSize != 512<<10 {
		t.Fatalf("limits not updated: max age %s, max msg size %d", info.Config.MaxAge, info.Config.MaxMsgSize)
	}
}

func TestEnsureStreamsIncompatible(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{})
	ctx := testCtx(t)
	// Someone else's stream already has the audit stream's name.
	if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultAuditStream, Subjects: []string{"other.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	err := b.EnsureStreams(ctx)
	if err == nil || !strings.Contains(err.Error(), `"`+DefaultAuditStream+`"`) || !strings.Contains(err.Error(), "subjects") {
		t.Fatalf("EnsureStreams over a stream with other subjects: err = %v, want one naming the stream and its subjects", err)
	}
	// The existing stream is untouched.
	info, err := b.StreamInfo(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Subjects[0] != "other.>" {
		t.Fatalf("existing stream changed: %v", info.Config.Subjects)
	}

	if err := b.JS.DeleteStream(ctx, DefaultAuditStream); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultAuditStream, Subjects: []string{"audit.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	err = b.EnsureStreams(ctx)
	if err == nil || !strings.Contains(err.Error(), `"`+DefaultAuditStream+`"`) || !strings.Contains(err.Error(), "storage") {
		t.Fatalf("EnsureStreams over a memory stream: err = %v, want one naming the stream and storage", err)
	}
	t.Logf("error: %v", err)
}

func TestEnsureStreamsReplicasRefused(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{})
	ctx := testCtx(t)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	// A single server cannot hold 3 replicas: JetStream refuses the change.
	b.Cfg.Replicas = 3
	err := b.EnsureStreams(ctx)
	if err == nil || !strings.Contains(err.Error(), `"`+DefaultAuditStream+`"`) || !strings.Contains(err.Error(), "replicas 1 → 3") {
		t.Fatalf("err = %v, want one naming the stream and the replicas change", err)
	}
	t.Logf("error: %v", err)
}

// TestCreateMissingStreamsLeavesExistingAlone: ingest created the streams
// with a 10 s duplicate window and a one-hour max age; a reader with the
// default settings creates only the stream that is missing and changes
// nothing on the others.
func TestCreateMissingStreamsLeavesExistingAlone(t *testing.T) {
	writer := openTestBus(t, config.NATSConfig{DuplicateWindow: 10 * time.Second, MaxAge: time.Hour})
	ctx := testCtx(t)
	if err := writer.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if err := writer.JS.DeleteStream(ctx, DeadLetterStream(writer.Cfg)); err != nil {
		t.Fatal(err)
	}
	reader, err := Open(ctx, config.NATSConfig{URL: writer.Embedded.ClientURL()}, "", "reader", testLog(t), false)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	for i := range 2 {
		if err := reader.CreateMissingStreams(ctx); err != nil {
			t.Fatalf("CreateMissingStreams #%d: %v", i+1, err)
		}
	}
	infos, err := reader.StreamInfos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 3 {
		t.Fatalf("%d streams, want 3", len(infos))
	}
	for _, info := range infos {
		c := info.Config
		if c.Name == DeadLetterStream(writer.Cfg) {
			if c.Duplicates != serverDefaultDuplicates || c.MaxAge != 0 {
				t.Errorf("created stream %s: duplicate window %s, max age %s, want the reader's defaults", c.Name, c.Duplicates, c.MaxAge)
			}
			continue
		}
		if c.Duplicates != 10*time.Second || c.MaxAge != time.Hour {
			t.Errorf("stream %s: duplicate window %s, max age %s, want 10s and 1h as ingest set them", c.Name, c.Duplicates, c.MaxAge)
		}
	}
}

func TestCreateMissingStreamsIncompatible(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{})
	ctx := testCtx(t)
	if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultSessionStream, Subjects: []string{"other.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	err := b.CreateMissingStreams(ctx)
	if err == nil || !strings.Contains(err.Error(), `"`+DefaultSessionStream+`"`) || !strings.Contains(err.Error(), "subjects") {
		t.Fatalf("err = %v, want one naming the stream and its subjects", err)
	}
}

func TestDefaultsMatchTheConfigDefaults(t *testing.T) {
	want := config.Default().NATS
	got := WithDefaults(config.NATSConfig{})
	if got.AuditStream != want.AuditStream || got.SessionStream != want.SessionStream || got.StateBucket != want.StateBucket || got.Listen != want.Listen {
		t.Errorf("bus defaults %q %q %q %q differ from config defaults %q %q %q %q",
			got.AuditStream, got.SessionStream, got.StateBucket, got.Listen,
			want.AuditStream, want.SessionStream, want.StateBucket, want.Listen)
	}
}
