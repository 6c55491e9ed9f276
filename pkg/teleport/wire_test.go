package teleport

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// slowPath decodes b the way the protobuf library and FromProto do.
func slowPath(t *testing.T, b []byte) (ExportedEvent, error) {
	t.Helper()
	var m auditlogpb.ExportEventUnstructured
	if err := proto.Unmarshal(b, &m); err != nil {
		return ExportedEvent{}, err
	}
	e, err := FromProto(m.GetEvent())
	return ExportedEvent{Event: e, Cursor: m.GetCursor()}, err
}

func randomString(r *rand.Rand) string {
	pieces := []string{"a", "user", "é", "✓", "🎉", "\"", "\\", "\n", "\t", "\x01", "\u2028", "<&>", " ", "0"}
	var sb strings.Builder
	for range r.IntN(12) {
		sb.WriteString(pieces[r.IntN(len(pieces))])
	}
	return sb.String()
}

func randomValue(r *rand.Rand, depth int) *structpb.Value {
	kinds := 7
	if depth > 3 {
		kinds = 5 // no more nesting
	}
	switch r.IntN(kinds) {
	case 0:
		return structpb.NewNullValue()
	case 1:
		nums := []float64{0, -0.0, 1, -2.5, 1e21, 1e-7, 123456789012345, 0.1, 3e-300, math.MaxFloat64, math.Inf(1), math.NaN(), float64(r.Int64())}
		return structpb.NewNumberValue(nums[r.IntN(len(nums))])
	case 2:
		return structpb.NewBoolValue(r.IntN(2) == 0)
	case 3, 4:
		return structpb.NewStringValue(randomString(r))
	case 5:
		return structpb.NewStructValue(randomStruct(r, depth+1))
	default:
		l := &structpb.ListValue{}
		for range r.IntN(5) {
			l.Values = append(l.Values, randomValue(r, depth+1))
		}
		return structpb.NewListValue(l)
	}
}

func randomStruct(r *rand.Rand, depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range r.IntN(30) {
		s.Fields[randomString(r)] = randomValue(r, depth)
	}
	return s
}

func randomEvent(r *rand.Rand) *auditlogpb.ExportEventUnstructured {
	body := randomStruct(r, 0)
	types := []string{"user.login", "session.upload", "db.session.query", ""}
	typ := types[r.IntN(len(types))]
	body.Fields["event"] = structpb.NewStringValue("body." + typ)
	if r.IntN(2) == 0 {
		body.Fields["sid"] = structpb.NewStringValue(randomString(r))
	} else if r.IntN(2) == 0 {
		body.Fields["sid"] = structpb.NewNumberValue(7) // not a string: no SID
	}
	u := &auditlogpb.EventUnstructured{Type: typ, Id: randomString(r), Index: r.Int64N(1<<40) - 1<<20, Unstructured: body}
	switch r.IntN(3) {
	case 0:
		u.Time = timestamppb.New(time.Unix(r.Int64N(4e9), r.Int64N(1e9)))
	case 1:
		u.Time = &timestamppb.Timestamp{} // the epoch
	}
	if r.IntN(5) == 0 {
		u.Unstructured = nil
	}
	return &auditlogpb.ExportEventUnstructured{Event: u, Cursor: randomString(r)}
}

func TestDecodeExportedMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 800 {
		m := randomEvent(r)
		b, err := proto.MarshalOptions{Deterministic: i%2 == 0}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := slowPath(t, b)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := decodeExportedFast(b)
		if err != nil {
			t.Fatalf("event %d: fast path refused a canonical encoding: %v", i, err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("event %d:\n fast %+v\n want %+v\n json %s\n want %s", i, fast, want, fast.Event.JSON, want.Event.JSON)
		}
	}
}

// field appends one length-delimited field.
func field(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodeExportedUnusualEncodings feeds encodings a canonical encoder
// does not write: the fast path hands them over and the result is the
// protobuf library's, errors included.
func TestDecodeExportedUnusualEncodings(t *testing.T) {
	str := func(s string) []byte { return marshal(t, structpb.NewStringValue(s)) }
	entry := func(k string, v []byte) []byte { return field(field(nil, mapKeyField, []byte(k)), mapValueField, v) }
	event := func(bodies ...[]byte) []byte {
		u := marshal(t, &auditlogpb.EventUnstructured{Type: "user.login", Id: "x"})
		for _, body := range bodies {
			u = field(u, eventUnstructuredField, body)
		}
		return field(field(nil, exportEventField, u), exportCursorField, []byte("c1"))
	}
	bothKinds := append(str("s"), marshal(t, structpb.NewBoolValue(true))...)
	cases := map[string]struct {
		wire    []byte
		json    string
		wantErr string
	}{
		"a key twice: the last wins": {
			wire: event(append(field(nil, structFieldsField, entry("k", str("first"))), field(nil, structFieldsField, entry("k", str("last")))...)),
			json: `{"k":"last"}`,
		},
		"a oneof set twice: the last wins": {
			wire: event(field(nil, structFieldsField, entry("k", bothKinds))),
			json: `{"k":true}`,
		},
		"unknown fields are skipped": {
			wire: event(append(field(nil, 9, []byte("zz")), field(nil, structFieldsField, entry("k", append(str("v"), field(nil, 15, nil)...)))...)),
			json: `{"k":"v"}`,
		},
		"the body in two pieces is merged": {
			wire: event(field(nil, structFieldsField, entry("b", str("2"))), field(nil, structFieldsField, entry("a", str("1")))),
			json: `{"a":"1","b":"2"}`,
		},
		"invalid UTF-8 in a string": {
			wire:    event(field(nil, structFieldsField, entry("k", field(nil, valueStringField, []byte("a\xffb"))))),
			wantErr: "invalid UTF-8",
		},
		"truncated": {
			wire:    event(field(nil, structFieldsField, entry("k", str("value"))))[:20],
			wantErr: "cannot parse",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := decodeExported(c.wire)
			want, werr := slowPath(t, c.wire)
			if c.wantErr != "" {
				if err == nil || werr == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v (protobuf: %v), want an error with %q", err, werr, c.wantErr)
				}
				return
			}
			if err != nil || werr != nil {
				t.Fatalf("errors: %v, %v", err, werr)
			}
			if string(got.Event.JSON) != c.json || !reflect.DeepEqual(got, want) {
				t.Fatalf("got %s %+v\nwant %s %+v", got.Event.JSON, got, c.json, want)
			}
		})
	}

	// The event field twice: the two messages are merged.
	a := marshal(t, &auditlogpb.EventUnstructured{Type: "user.login", Unstructured: &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStringValue("1")}}})
	b := marshal(t, &auditlogpb.EventUnstructured{Id: "id2", Unstructured: &structpb.Struct{Fields: map[string]*structpb.Value{"b": structpb.NewBoolValue(false)}}})
	got, err := decodeExported(append(field(nil, exportEventField, a), field(nil, exportEventField, b)...))
	if err != nil || got.Event.ID != "id2" || got.Event.Type != "user.login" || !bytes.Equal(got.Event.JSON, []byte(`{"a":"1","b":false}`)) {
		t.Fatalf("merged event: %+v %s, %v", got, got.Event.JSON, err)
	}

	// No event at all.
	if _, err := decodeExported(field(nil, exportCursorField, []byte("c"))); err == nil || !strings.Contains(err.Error(), "empty event") {
		t.Fatalf("no event: %v", err)
	}
}

func BenchmarkDecodeExported(b *testing.B) {
	body, err := structpb.NewStruct(map[string]any{"event": "user.login", "code": "T1000I", "ei": 0, "success": true,
		"time": "2026-11-25T10:00:00.123Z", "uid": "0b2c7d8e-1111-2222-3333-444455556666", "user": "alice",
		"cluster_name": "sim.teleport.example", "addr.remote": "10.1.2.3:4567", "method": "local",
		"user_agent": "tsh/17.0.0", "mfa": map[string]any{"kind": "totp", "device": "phone"}})
	if err != nil {
		b.Fatal(err)
	}
	m := &auditlogpb.ExportEventUnstructured{Cursor: "chunk-1:42", Event: &auditlogpb.EventUnstructured{
		Type: "user.login", Id: "0b2c7d8e-1111-2222-3333-444455556666", Time: timestamppb.Now(), Unstructured: body}}
	wire, err := proto.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("protobuf", func(b *testing.B) {
		for b.Loop() {
			var m auditlogpb.ExportEventUnstructured
			_ = proto.Unmarshal(wire, &m)
			_, _ = FromProto(m.GetEvent())
		}
	})
	b.Run("wire", func(b *testing.B) {
		for b.Loop() {
			_, _ = decodeExported(wire)
		}
	})
}
