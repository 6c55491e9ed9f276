package teleportsim

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	apievents "github.com/gravitational/teleport/api/types/events"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// variedOptions hold every kind of audit event, session events and huge
// events of both sorts.
var variedOptions = Options{Seed: 13, Events: 2500, Sessions: 60, HugeEvents: 4, From: baseTime, To: baseTime.Add(48 * time.Hour)}

func variedStore(t *testing.T) *store {
	t.Helper()
	opts, err := variedOptions.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return generate(opts)
}

// slowEvent is an event as the server rendered it before encodings were
// cached.
func slowEvent(t *testing.T, st *store, id uint32) *auditlogpb.EventUnstructured {
	t.Helper()
	u, err := apievents.ToUnstructured(st.render(hit{id, st.recs[id]}))
	if err != nil {
		t.Fatalf("render event %d: %v", id, err)
	}
	return u
}

func decodeEvent(t *testing.T, b []byte) *auditlogpb.EventUnstructured {
	t.Helper()
	u := new(auditlogpb.EventUnstructured)
	if err := proto.Unmarshal(b, u); err != nil {
		t.Fatalf("decode cached event: %v", err)
	}
	return u
}

func TestEncodedEqualsRenderedEvent(t *testing.T) {
	st := variedStore(t)
	kinds := map[kind]int{}
	huge := 0
	for id := range st.recs {
		h := hit{uint32(id), st.recs[id]}
		b, err := st.encoded(h)
		if err != nil {
			t.Fatalf("event %d: %v", id, err)
		}
		again, err := st.encoded(h)
		if err != nil {
			t.Fatalf("event %d again: %v", id, err)
		}
		if &again[0] != &b[0] {
			t.Fatalf("event %d rendered twice", id)
		}
		if got, want := decodeEvent(t, b), slowEvent(t, st, h.id); !proto.Equal(got, want) {
			t.Fatalf("event %d: cached %v, rendered %v", id, got, want)
		}
		kinds[h.rec.kind]++
		if h.rec.huge {
			huge++
			if len(b) < hugeEventBytes {
				t.Errorf("huge event %d encodes to %d bytes", id, len(b))
			}
		}
	}
	for k := range numKinds {
		if kinds[k] == 0 {
			t.Errorf("no %s event (kind %d) among %d", kindTypes[k], k, len(st.recs))
		}
	}
	if huge == 0 {
		t.Error("no huge audit event")
	}
}

func TestPrerenderEqualsRenderedEvent(t *testing.T) {
	st := variedStore(t)
	if err := st.prerender(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(st.enc.wire) != len(st.recs) {
		t.Fatalf("prerendered %d of %d events", len(st.enc.wire), len(st.recs))
	}
	for id, b := range st.enc.wire {
		if b == nil {
			t.Fatalf("event %d not prerendered", id)
		}
		if got, want := decodeEvent(t, b), slowEvent(t, st, uint32(id)); !proto.Equal(got, want) {
			t.Fatalf("event %d: prerendered %v, rendered %v", id, got, want)
		}
	}

	// Live events and stragglers come after the prerender and are rendered
	// when first served.
	st.appendLive(baseTime.Add(47*time.Hour), 30, time.Second, 0)
	if _, err := st.addStraggler(baseTime, 5, baseTime.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for id := len(st.enc.wire); id < len(st.recs); id++ {
		b, err := st.encoded(hit{uint32(id), st.recs[id]})
		if err != nil {
			t.Fatalf("live event %d: %v", id, err)
		}
		if got, want := decodeEvent(t, b), slowEvent(t, st, uint32(id)); !proto.Equal(got, want) {
			t.Fatalf("live event %d: cached %v, rendered %v", id, got, want)
		}
	}
}

func TestPrerenderStopsOnCancel(t *testing.T) {
	st := variedStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := st.prerender(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("prerender after cancel: %v, want context.Canceled", err)
	}
}

func TestExportEventWire(t *testing.T) {
	st := variedStore(t)
	for id := range st.recs {
		if id%7 != 0 && !st.recs[id].huge {
			continue
		}
		b, err := st.encoded(hit{uint32(id), st.recs[id]})
		if err != nil {
			t.Fatal(err)
		}
		for _, cursor := range []string{encodeCursor("0123456789abcdef0001", id), ""} {
			var got auditlogpb.ExportEventUnstructured
			if err := proto.Unmarshal(wireOf(exportEvent(b, cursor)), &got); err != nil {
				t.Fatalf("event %d, cursor %q: %v", id, cursor, err)
			}
			want := &auditlogpb.ExportEventUnstructured{Event: slowEvent(t, st, uint32(id)), Cursor: cursor}
			if !proto.Equal(&got, want) {
				t.Fatalf("event %d, cursor %q: wire %v, want %v", id, cursor, &got, want)
			}
		}
	}
}

// TestExportEventBytes checks the hand-built message byte for byte against
// proto.Marshal, on an event without maps (whose order proto leaves open).
func TestExportEventBytes(t *testing.T) {
	ev := &auditlogpb.EventUnstructured{Type: "user.login", Id: "3f0c", Index: 5}
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, cursor := range []string{"Y3Vyc29y", ""} {
		want, err := proto.Marshal(&auditlogpb.ExportEventUnstructured{Event: ev, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		if got := wireOf(exportEvent(b, cursor)); string(got) != string(want) {
			t.Errorf("cursor %q: wire %x, proto.Marshal %x", cursor, got, want)
		}
	}
}

func TestFieldNumbers(t *testing.T) {
	fields := (&auditlogpb.ExportEventUnstructured{}).ProtoReflect().Descriptor().Fields()
	for name, want := range map[protoreflect.Name]protowire.Number{"event": exportEventField, "cursor": exportCursorField} {
		f := fields.ByName(name)
		if f == nil || f.Number() != want || f.Cardinality() == protoreflect.Repeated ||
			f.Kind() != protoreflect.MessageKind && f.Kind() != protoreflect.StringKind {
			t.Errorf("ExportEventUnstructured.%s: descriptor %v, want field %d", name, f, want)
		}
	}
}

func TestWireCodec(t *testing.T) {
	c := newWireCodec()
	raw := []byte{0x0a, 0x00, 0x12, 0x01, 'x'}
	data, err := c.Marshal(&preEncoded{parts: [][]byte{raw[:2], raw[2:]}})
	if err != nil {
		t.Fatal(err)
	}
	if got := data.Materialize(); string(got) != string(raw) {
		t.Errorf("pre-encoded: codec sent %x, want %x", got, raw)
	}
	data.Free()
	if string(raw) != "\x0a\x00\x12\x01x" {
		t.Error("freeing the sent message changed the cached bytes")
	}

	msg := &auditlogpb.ExportEventUnstructured{Event: &auditlogpb.EventUnstructured{Type: "print"}, Cursor: "c"}
	data, err = c.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	var back auditlogpb.ExportEventUnstructured
	if err := c.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&back, msg) {
		t.Errorf("proto message round trip: %v, want %v", &back, msg)
	}
	if c.Name() != "proto" {
		t.Errorf("codec name %q", c.Name())
	}
}

// TestPrerenderedServerExportsSameEvents compares what clients receive from
// a server that prerendered with what one rendering on demand sends.
func TestPrerenderedServerExportsSameEvents(t *testing.T) {
	lazy := startSim(t, variedOptions)
	opts := variedOptions
	opts.Prerender = true
	pre := startSim(t, opts)
	_, want := exportAll(t, connect(t, lazy), variedOptions.From, variedOptions.To)
	_, got := exportAll(t, connect(t, pre), variedOptions.From, variedOptions.To)
	if len(got) != len(want) {
		t.Fatalf("%d chunks, want %d", len(got), len(want))
	}
	for c, evs := range want {
		if len(got[c]) != len(evs) {
			t.Fatalf("chunk %s: %d events, want %d", c, len(got[c]), len(evs))
		}
		for i := range evs {
			if !proto.Equal(got[c][i], evs[i]) {
				t.Fatalf("chunk %s event %d: %v, want %v", c, i, got[c][i], evs[i])
			}
		}
	}
}

// TestEncodedConcurrently renders the same events from several goroutines
// while live events arrive; run with -race.
func TestEncodedConcurrently(t *testing.T) {
	opts, err := Options{Seed: 3, Events: 400, Sessions: 10, From: baseTime, To: baseTime.Add(24 * time.Hour)}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	st := generate(opts)
	var g errgroup.Group
	g.Go(func() error {
		for i := range 20 {
			st.appendLive(baseTime.Add(time.Duration(i)*time.Second), 5, time.Second, 0)
		}
		return nil
	})
	for range 4 {
		g.Go(func() error {
			for id := range uint32(400) {
				st.mu.RLock()
				h := hit{id, st.recs[id]}
				st.mu.RUnlock()
				if _, err := st.encoded(h); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	st.mu.RLock()
	n := len(st.recs)
	st.mu.RUnlock()
	for id := range n {
		b, err := st.encoded(hit{uint32(id), st.recs[id]})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := decodeEvent(t, b), slowEvent(t, st, uint32(id)); !proto.Equal(got, want) {
			t.Fatalf("event %d: cached %v, rendered %v", id, got, want)
		}
	}
}

// wireOf joins a pre-encoded message's parts, as gRPC sends them.
func wireOf(p *preEncoded) []byte { return bytes.Join(p.parts, nil) }
