package bus

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// TestFullStreamRefusesWithNoRoom fills a stream at max-bytes: it refuses
// the next message (discard new) with an error NoRoom recognises, keeps
// every earlier one, and the Publisher reports it at once.
func TestFullStreamRefusesWithNoRoom(t *testing.T) {
	ctx := testCtx(t)
	b := openTestBus(t, config.NATSConfig{MaxBytes: 4096})
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := b.StreamInfo(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Discard != jetstream.DiscardNew {
		t.Fatalf("audit stream discards %s, want DiscardNew", info.Config.Discard)
	}
	var refused error
	stored := 0
	for i := range 1000 {
		_, err := b.JS.PublishMsg(ctx, NewMsg(auditEvent(i)))
		if err != nil {
			refused = err
			break
		}
		stored++
	}
	reason, ok := NoRoom(refused)
	if !ok || reason != NoRoomMaxBytes {
		t.Fatalf("publish to a full stream: %v; NoRoom = %q, %v, want %q", refused, reason, ok, NoRoomMaxBytes)
	}
	if info, err = b.StreamInfo(ctx, DefaultAuditStream); err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(stored) || info.State.FirstSeq != 1 {
		t.Fatalf("full stream holds %d messages from %d, want the %d stored from 1", info.State.Msgs, info.State.FirstSeq, stored)
	}
	if retryable(refused) {
		t.Errorf("the Publisher retries a refusal for lack of room: %v", refused)
	}
	for _, err := range []error{nil, errors.New("other"), &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "message size exceeds maximum allowed"}} {
		if r, ok := NoRoom(err); ok {
			t.Errorf("NoRoom(%v) = %q, want no", err, r)
		}
	}
}

// TestEnsureStreamsSwitchesToDiscardNew brings a stream an older version
// created with discard old to discard new.
func TestEnsureStreamsSwitchesToDiscardNew(t *testing.T) {
	ctx := testCtx(t)
	b := openTestBus(t, config.NATSConfig{})
	old := StreamConfigs(b.Cfg)[0]
	old.Discard = jetstream.DiscardOld
	if _, err := b.JS.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := b.StreamInfo(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Discard != jetstream.DiscardNew {
		t.Fatalf("audit stream still discards %s", info.Config.Discard)
	}
}

// TestScanMsgIDs reads every id a stream holds, across fetch batches and
// with messages removed from its middle.
func TestScanMsgIDs(t *testing.T) {
	ctx := testCtx(t)
	b := openTestBus(t, config.NATSConfig{})
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 2500
	for i := range n {
		if _, err := b.JS.PublishMsg(ctx, NewMsg(auditEvent(i))); err != nil {
			t.Fatal(err)
		}
	}
	s, err := b.JS.Stream(ctx, DefaultAuditStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{2, 1500, n} {
		if err := s.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	read, err := b.ScanMsgIDs(ctx, DefaultAuditStream, func(id string) { seen[id]++ })
	if err != nil {
		t.Fatal(err)
	}
	if read != n-3 || len(seen) != n-3 {
		t.Fatalf("scan read %d messages, %d ids; want %d", read, len(seen), n-3)
	}
	for _, gone := range []int{1, 1499} {
		if seen[fmt.Sprintf("ev-%04d", gone)] != 0 {
			t.Errorf("deleted message ev-%04d scanned", gone)
		}
	}
	if _, err := b.ScanMsgIDs(ctx, "NO_SUCH_STREAM", func(string) {}); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("scan of a missing stream: %v", err)
	}
}
