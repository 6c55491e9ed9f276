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

// preEncoded is a response whose protobuf wire encoding is already built,
// in parts sent one after the other. The server codec sends them as they
// are, so serving a stored event neither renders nor copies it.
type preEncoded struct {
	parts [][]byte
}

// exportEvent is ExportEventUnstructured{Event: event, Cursor: cursor} on the
// wire, where event is the encoding of an EventUnstructured.
func exportEvent(event []byte, cursor string) *preEncoded {
	head := protowire.AppendTag(nil, exportEventField, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(event)))
	return &preEncoded{parts: [][]byte{head, event, appendString(nil, exportCursorField, cursor)}}
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
		// bytes alone, so the parts may be shared.
		out := make(mem.BufferSlice, 0, len(p.parts))
		for _, part := range p.parts {
			out = append(out, mem.SliceBuffer(part))
		}
		return out, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

// Name implements encoding.CodecV2; the wire format is proto's.
func (c wireCodec) Name() string { return c.proto.Name() }
