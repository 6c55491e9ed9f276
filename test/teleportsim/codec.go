package teleportsim

import (
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the teleport.auditlog.v1 message the server builds from
// already encoded events (see the generated auditlog.pb.go;
// TestFieldNumbers checks them against the descriptors).
const (
	exportEventField  protowire.Number = 1 // ExportEventUnstructured.event
	exportCursorField protowire.Number = 2 // ExportEventUnstructured.cursor
)

// preEncoded is a response whose protobuf wire encoding is already built.
// The server codec sends its bytes as they are, so serving a stored event
// costs a copy instead of a JSON round trip and a proto marshal.
type preEncoded struct {
	wire []byte
}

// exportEvent is ExportEventUnstructured{Event: event, Cursor: cursor} on the
// wire, where event is the encoding of an EventUnstructured.
func exportEvent(event []byte, cursor string) *preEncoded {
	size := protowire.SizeTag(exportEventField) + protowire.SizeBytes(len(event)) +
		protowire.SizeTag(exportCursorField) + protowire.SizeBytes(len(cursor))
	b := make([]byte, 0, size)
	b = protowire.AppendTag(b, exportEventField, protowire.BytesType)
	b = protowire.AppendBytes(b, event)
	b = appendString(b, exportCursorField, cursor)
	return &preEncoded{wire: b}
}

// appendString appends a proto3 string field, which is left out when empty
// as proto.Marshal leaves it out.
func appendString(b []byte, field protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// wireCodec is the server's gRPC codec: it sends a preEncoded's bytes and
// hands every other message, and every request, to the standard proto
// codec.
type wireCodec struct {
	proto encoding.CodecV2
}

func newWireCodec() wireCodec {
	return wireCodec{proto: encoding.GetCodecV2(grpcproto.Name)}
}

// Marshal implements encoding.CodecV2.
func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		// SliceBuffer is not pooled: gRPC's Free after the write leaves the
		// bytes alone, so p.wire may be shared.
		return mem.BufferSlice{mem.SliceBuffer(p.wire)}, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

// Name implements encoding.CodecV2; the wire format is proto's.
func (c wireCodec) Name() string { return c.proto.Name() }
