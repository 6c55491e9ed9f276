package teleport

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The bulk export is the hot path of a backfill: hundreds of thousands of
// events, each an EventUnstructured whose body is a google.protobuf.Struct.
// Decoding that into Go maps and Values and then writing it as JSON costs
// more CPU and garbage than the rest of ingest together, so export items
// are decoded here straight from the wire into JSON. The result is the same
// Event FromProto gives for the same bytes (TestDecodeExportedMatchesProto).
// Anything a canonical encoder does not produce (a map key twice, a oneof
// set twice, a known field with another wire type, invalid UTF-8, deep
// nesting) is handed to the protobuf library instead, so its rules, and its
// errors, apply.

// Field numbers, from teleport/auditlog/v1/auditlog.proto and
// google/protobuf/{struct,timestamp}.proto.
const (
	exportEventField  = 1 // ExportEventUnstructured.event
	exportCursorField = 2 // ExportEventUnstructured.cursor

	eventTypeField         = 1 // EventUnstructured.type
	eventIDField           = 2 // EventUnstructured.id
	eventTimeField         = 3 // EventUnstructured.time
	eventIndexField        = 4 // EventUnstructured.index
	eventUnstructuredField = 5 // EventUnstructured.unstructured

	structFieldsField = 1 // Struct.fields (map entries)
	mapKeyField       = 1
	mapValueField     = 2

	valueNullField   = 1
	valueNumberField = 2
	valueStringField = 3
	valueBoolField   = 4
	valueStructField = 5
	valueListField   = 6
	listValuesField  = 1

	timestampSecondsField = 1
	timestampNanosField   = 2
)

// maxWireDepth bounds the nesting the fast path follows; deeper bodies go
// to the protobuf library, which has its own limit.
const maxWireDepth = 64

// errSlowPath says the fast decoder met an encoding it leaves to the
// protobuf library.
var errSlowPath = errors.New("not a canonical encoding")

// decodeExported decodes the wire form of one ExportEventUnstructured.
func decodeExported(b []byte) (ExportedEvent, error) {
	x, err := decodeExportedFast(b)
	if err == nil {
		return x, nil
	}
	var m auditlogpb.ExportEventUnstructured
	if err := proto.Unmarshal(b, &m); err != nil {
		return ExportedEvent{}, fmt.Errorf("decode export event: %w", err)
	}
	e, err := FromProto(m.GetEvent())
	if err != nil {
		return ExportedEvent{}, err
	}
	return ExportedEvent{Event: e, Cursor: m.GetCursor()}, nil
}

func decodeExportedFast(b []byte) (ExportedEvent, error) {
	var x ExportedEvent
	var event []byte
	seen := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case exportEventField:
			if typ != protowire.BytesType || seen {
				return errSlowPath // a second occurrence would be merged
			}
			event, seen = v, true
		case exportCursorField:
			if typ != protowire.BytesType || !utf8.Valid(v) {
				return errSlowPath
			}
			x.Cursor = string(v)
		}
		return nil
	})
	if err != nil {
		return x, err
	}
	if !seen {
		return x, errSlowPath // FromProto reports the missing event
	}
	e, err := decodeEvent(event)
	x.Event = e
	return x, err
}

// decodeEvent decodes an EventUnstructured.
func decodeEvent(b []byte) (Event, error) {
	var e Event
	var body []byte
	seenBody, seenTime := false, false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case eventTypeField, eventIDField:
			if typ != protowire.BytesType || !utf8.Valid(v) {
				return errSlowPath
			}
			if num == eventTypeField {
				e.Type = string(v)
			} else {
				e.ID = string(v)
			}
		case eventTimeField:
			if typ != protowire.BytesType || seenTime {
				return errSlowPath
			}
			t, err := decodeTimestamp(v)
			e.Time, seenTime = t, true
			return err
		case eventIndexField:
			if typ != protowire.VarintType {
				return errSlowPath
			}
			e.Index = int64(varint(v))
		case eventUnstructuredField:
			if typ != protowire.BytesType || seenBody {
				return errSlowPath
			}
			body, seenBody = v, true
		}
		return nil
	})
	if err != nil {
		return e, err
	}
	w := wireWriter{out: make([]byte, 0, len(body)+len(body)/4+16)}
	var top topFields
	if err := w.object(body, 0, &top); err != nil {
		return e, err
	}
	e.JSON, e.SID = w.out, top.sid
	if e.Type == "" {
		e.Type = top.event
	}
	return e, nil
}

// decodeTimestamp decodes a google.protobuf.Timestamp as AsTime does.
func decodeTimestamp(b []byte) (time.Time, error) {
	var secs, nanos int64
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if (num == timestampSecondsField || num == timestampNanosField) && typ != protowire.VarintType {
			return errSlowPath
		}
		switch num {
		case timestampSecondsField:
			secs = int64(varint(v))
		case timestampNanosField:
			nanos = int64(int32(varint(v)))
		}
		return nil
	})
	return time.Unix(secs, nanos).UTC(), err
}

// nextField splits the first field off b: its number, wire type, value
// (the payload of a length-delimited field; the raw varint or fixed bytes
// otherwise) and the rest. A malformed field goes to the slow path, which
// reports it.
func nextField(b []byte) (protowire.Number, protowire.Type, []byte, []byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, nil, nil, errSlowPath
	}
	b = b[n:]
	var v []byte
	switch typ {
	case protowire.BytesType:
		p, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return 0, 0, nil, nil, errSlowPath
		}
		v, n = p, m
	default:
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, 0, nil, nil, errSlowPath
		}
		v = b[:n]
	}
	return num, typ, v, b[n:], nil
}

// eachField calls f with every field of b, in order, until a field is
// malformed or f returns an error.
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		num, typ, v, rest, err := nextField(b)
		if err != nil {
			return err
		}
		if err := f(num, typ, v); err != nil {
			return err
		}
		b = rest
	}
	return nil
}

// varint decodes a varint that nextField already checked.
func varint(v []byte) uint64 {
	x, _ := protowire.ConsumeVarint(v)
	return x
}

// topFields are the body fields Event carries besides the JSON.
type topFields struct{ event, sid string }

// entry is one key and value of a Struct, as wire bytes.
type entry struct{ key, value []byte }

// wireWriter writes Struct, Value and ListValue wire bytes as JSON.
type wireWriter struct{ out []byte }

// object writes a Struct: its entries sorted by key, as appendStruct does.
// top, when not nil, receives the "event" and "sid" strings.
func (w *wireWriter) object(b []byte, depth int, top *topFields) error {
	if depth > maxWireDepth {
		return errSlowPath
	}
	var small [24]entry
	entries := small[:0]
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != structFieldsField {
			return nil // an unknown field
		}
		if typ != protowire.BytesType {
			return errSlowPath
		}
		e, err := mapEntry(v)
		entries = append(entries, e)
		return err
	})
	if err != nil {
		return err
	}
	slices.SortFunc(entries, func(a, b entry) int { return bytes.Compare(a.key, b.key) })
	w.out = append(w.out, '{')
	for i, e := range entries {
		if i > 0 {
			if bytes.Equal(e.key, entries[i-1].key) {
				return errSlowPath // the last one would win
			}
			w.out = append(w.out, ',')
		}
		w.out = appendString(w.out, e.key)
		w.out = append(w.out, ':')
		start := len(w.out)
		if err := w.value(e.value, depth+1); err != nil {
			return err
		}
		if top != nil && w.out[start] == '"' {
			switch string(e.key) {
			case "event":
				top.event = stringValue(e.value)
			case "sid":
				top.sid = stringValue(e.value)
			}
		}
	}
	w.out = append(w.out, '}')
	return nil
}

// mapEntry splits a map entry into its key and value.
func mapEntry(b []byte) (entry, error) {
	var e entry
	seenValue := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case mapKeyField:
			if typ != protowire.BytesType || !utf8.Valid(v) {
				return errSlowPath
			}
			e.key = v
		case mapValueField:
			if typ != protowire.BytesType || seenValue {
				return errSlowPath
			}
			e.value, seenValue = v, true
		}
		return nil
	})
	return e, err
}

// value writes a Value; one with no kind set is null, as in appendValue.
func (w *wireWriter) value(b []byte, depth int) error {
	var kind protowire.Number
	var typ protowire.Type
	var v []byte
	err := eachField(b, func(num protowire.Number, t protowire.Type, p []byte) error {
		if num < valueNullField || num > valueListField {
			return nil // an unknown field
		}
		if kind != 0 {
			return errSlowPath // the oneof set twice
		}
		kind, typ, v = num, t, p
		return nil
	})
	if err != nil {
		return err
	}
	if kind != 0 && typ != valueWireType(kind) {
		return errSlowPath
	}
	switch kind {
	case valueNumberField:
		bits, _ := protowire.ConsumeFixed64(v)
		w.out = appendNumber(w.out, math.Float64frombits(bits))
	case valueStringField:
		if !utf8.Valid(v) {
			return errSlowPath
		}
		w.out = appendString(w.out, v)
	case valueBoolField:
		if varint(v) != 0 {
			w.out = append(w.out, "true"...)
		} else {
			w.out = append(w.out, "false"...)
		}
	case valueStructField:
		return w.object(v, depth+1, nil)
	case valueListField:
		return w.list(v, depth+1)
	default:
		w.out = append(w.out, "null"...)
	}
	return nil
}

// valueWireType is the wire type of a Value's field.
func valueWireType(kind protowire.Number) protowire.Type {
	switch kind {
	case valueNullField, valueBoolField:
		return protowire.VarintType
	case valueNumberField:
		return protowire.Fixed64Type
	default:
		return protowire.BytesType
	}
}

// list writes a ListValue.
func (w *wireWriter) list(b []byte, depth int) error {
	if depth > maxWireDepth {
		return errSlowPath
	}
	w.out = append(w.out, '[')
	first := true
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != listValuesField {
			return nil
		}
		if typ != protowire.BytesType {
			return errSlowPath
		}
		if !first {
			w.out = append(w.out, ',')
		}
		first = false
		return w.value(v, depth+1)
	})
	w.out = append(w.out, ']')
	return err
}

// stringValue is the string of a Value that value wrote as a string.
func stringValue(b []byte) string {
	var s string
	_ = eachField(b, func(num protowire.Number, _ protowire.Type, v []byte) error {
		if num == valueStringField {
			s = string(v)
		}
		return nil
	})
	return s
}

// exportCodec is the gRPC codec of ingest's export stream: requests are
// marshalled by the standard protobuf codec, and responses received into
// an *exportFrame are decoded by decodeExported. Its name is "proto", so
// the server sees the usual content type.
type exportCodec struct{}

// exportFrame receives one decoded export item.
type exportFrame struct{ item ExportedEvent }

var protoCodec = encoding.GetCodecV2("proto")

func (exportCodec) Name() string { return "proto" }

func (exportCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (exportCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*exportFrame)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData() // decodeExported copies what it keeps
	} else {
		b = data.Materialize()
	}
	item, err := decodeExported(b)
	if err != nil {
		return err
	}
	f.item = item
	return nil
}
