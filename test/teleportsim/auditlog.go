package teleportsim

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	auditlogpb "github.com/gravitational/teleport/api/gen/proto/go/teleport/auditlog/v1"
	"github.com/gravitational/teleport/api/types"
	apievents "github.com/gravitational/teleport/api/types/events"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Paging limits, as Teleport applies them.
const (
	// DefaultPageLimit is the page size of a search asking for limit 0.
	DefaultPageLimit = 500
	// MaxPageLimit is the largest page a search may ask for.
	MaxPageLimit = 10000
	// MaxPageBytes cuts a page once its events add up to this many bytes;
	// a page always holds at least one event.
	MaxPageBytes = 1 << 20
)

const auditLogServiceName = "teleport.auditlog.v1.AuditLogService"

// unknownMethod is what a server without the method answers.
func unknownMethod(service, method string) error {
	return status.Errorf(codes.Unimplemented, "unknown method %s for service %s", method, service)
}

// auditLogService serves teleport.auditlog.v1.AuditLogService.
type auditLogService struct {
	auditlogpb.UnimplementedAuditLogServiceServer
	s *Server
}

// GetUnstructuredEvents answers SearchUnstructuredEvents.
func (a *auditLogService) GetUnstructuredEvents(ctx context.Context, req *auditlogpb.GetUnstructuredEventsRequest) (*auditlogpb.EventsUnstructured, error) {
	q, err := newQuery(req.GetStartDate().AsTime(), req.GetEndDate().AsTime(), req.GetEventTypes(), req.GetLimit(), types.EventOrder(req.GetOrder()), req.GetStartKey())
	if err != nil {
		return nil, err
	}
	items, lastKey, err := page(ctx, a.s.st, q, a.s.opts.Search, func(h hit) (*auditlogpb.EventUnstructured, int, error) {
		// Decoding the cached encoding takes half the CPU of rendering
		// the event again.
		b, err := a.s.st.encoded(h)
		if err != nil {
			return nil, 0, status.Error(codes.Internal, err.Error())
		}
		u := new(auditlogpb.EventUnstructured)
		if err := proto.Unmarshal(b, u); err != nil {
			return nil, 0, status.Errorf(codes.Internal, "decode cached event %d: %v", h.id, err)
		}
		return u, len(b), nil
	})
	if err != nil {
		return nil, err
	}
	return &auditlogpb.EventsUnstructured{Items: items, LastKey: lastKey}, nil
}

// GetEventExportChunks lists the sealed chunks of a UTC date.
func (a *auditLogService) GetEventExportChunks(req *auditlogpb.GetEventExportChunksRequest, stream grpc.ServerStreamingServer[auditlogpb.EventExportChunk]) error {
	if a.s.opts.Older {
		return unknownMethod(auditLogServiceName, "GetEventExportChunks")
	}
	if req.GetDate() == nil {
		return status.Error(codes.InvalidArgument, "missing date")
	}
	for _, c := range a.s.st.chunks(req.GetDate().AsTime()) {
		if err := stream.Send(&auditlogpb.EventExportChunk{Chunk: c}); err != nil {
			return err
		}
	}
	return nil
}

// ExportUnstructuredEvents streams one chunk's events from after a cursor.
func (a *auditLogService) ExportUnstructuredEvents(req *auditlogpb.ExportUnstructuredEventsRequest, stream grpc.ServerStreamingServer[auditlogpb.ExportEventUnstructured]) error {
	if a.s.opts.Older {
		return unknownMethod(auditLogServiceName, "ExportUnstructuredEvents")
	}
	if req.GetDate() == nil || req.GetChunk() == "" {
		return status.Error(codes.InvalidArgument, "missing date or chunk")
	}
	date := req.GetDate().AsTime().UTC()
	hits, ok := a.s.st.chunkEvents(date, req.GetChunk())
	if !ok {
		return status.Errorf(codes.NotFound, "chunk %q not found for date %s", req.GetChunk(), date.Format(time.DateOnly))
	}
	pos, err := decodeCursor(req.GetChunk(), req.GetCursor())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	for i := pos + 1; i < len(hits); i++ {
		if err := stream.Context().Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		b, err := a.s.st.encoded(hits[i])
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		// SendMsg, not Send: the server codec sends the pre-encoded
		// ExportEventUnstructured as it is.
		if err := stream.SendMsg(exportEvent(b, encodeCursor(req.GetChunk(), i))); err != nil {
			return err
		}
	}
	return nil
}

// StreamUnstructuredSessionEvents streams a session recording as JSON.
func (a *auditLogService) StreamUnstructuredSessionEvents(req *auditlogpb.StreamUnstructuredSessionEventsRequest, stream grpc.ServerStreamingServer[auditlogpb.EventUnstructured]) error {
	if a.s.opts.Older {
		return unknownMethod(auditLogServiceName, "StreamUnstructuredSessionEvents")
	}
	n, err := a.s.recordingAvailable(req.GetSessionId())
	if err != nil {
		return err
	}
	for _, ev := range a.s.st.recording(n, int64(req.GetStartIndex())) {
		if err := stream.Context().Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		u, err := apievents.ToUnstructured(ev)
		if err != nil {
			return status.Errorf(codes.Internal, "convert session event %d: %v", ev.GetIndex(), err)
		}
		if err := stream.Send(u); err != nil {
			return err
		}
	}
	return nil
}

// newQuery checks a search request the way Teleport does.
func newQuery(from, to time.Time, eventTypes []string, limit int32, order types.EventOrder, startKey string) (query, error) {
	if limit < 0 || limit > MaxPageLimit {
		return query{}, status.Errorf(codes.InvalidArgument, "limit %d is outside 0..%d", limit, MaxPageLimit)
	}
	if limit == 0 {
		limit = DefaultPageLimit
	}
	if order != types.EventOrderAscending && order != types.EventOrderDescending {
		return query{}, status.Errorf(codes.InvalidArgument, "unknown event order %d", order)
	}
	if to.Before(from) {
		return query{}, status.Errorf(codes.InvalidArgument, "end date %s is before start date %s", to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	if _, _, err := decodeKey(startKey); err != nil {
		return query{}, status.Error(codes.InvalidArgument, err.Error())
	}
	q := query{from: from, to: to, limit: int(limit), desc: order == types.EventOrderDescending, startKey: startKey}
	if len(eventTypes) > 0 {
		q.types = make(map[string]bool, len(eventTypes))
		for _, t := range eventTypes {
			q.types[t] = true
		}
	}
	return q, nil
}

// page runs a search and converts its events, cutting the page at
// MaxPageBytes. The LastKey is empty only when the search ran out of events
// before the page was full. In SearchFileLog mode the file log answers, at
// its cost, and cuts the page at MaxPageBytes of JSON itself.
func page[T any](ctx context.Context, st *store, q query, mode SearchMode, conv func(hit) (T, int, error)) ([]T, string, error) {
	if mode == SearchFileLog {
		return filePage(ctx, st, q, conv)
	}
	hits, err := st.search(q)
	if err != nil {
		return nil, "", status.Error(codes.InvalidArgument, err.Error())
	}
	var out []T
	size := 0
	for i, h := range hits {
		item, n, err := conv(h)
		if err != nil {
			return nil, "", err
		}
		if len(out) > 0 && size+n > MaxPageBytes {
			return out, encodeKey(hits[i-1]), nil
		}
		out = append(out, item)
		size += n
	}
	if len(hits) == q.limit {
		return out, encodeKey(hits[len(hits)-1]), nil
	}
	return out, "", nil
}

// filePage answers a search from the file log.
func filePage[T any](ctx context.Context, st *store, q query, conv func(hit) (T, int, error)) ([]T, string, error) {
	hits, full, err := st.files.search(ctx, st, q)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", status.FromContextError(ctx.Err()).Err()
		}
		return nil, "", status.Error(codes.Internal, err.Error())
	}
	out := make([]T, 0, len(hits))
	for _, h := range hits {
		item, _, err := conv(h)
		if err != nil {
			return nil, "", err
		}
		out = append(out, item)
	}
	if full && len(hits) > 0 {
		return out, encodeKey(hits[len(hits)-1]), nil
	}
	return out, "", nil
}

func encodeCursor(chunk string, pos int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("c1:" + chunk + ":" + strconv.Itoa(pos)))
}

var errBadCursor = errors.New("invalid cursor")

// decodeCursor returns the position of the last event the cursor covers,
// -1 for an empty cursor.
func decodeCursor(chunk, cursor string) (int, error) {
	if cursor == "" {
		return -1, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return 0, fmt.Errorf("%w %q", errBadCursor, cursor)
	}
	rest, ok := strings.CutPrefix(string(raw), "c1:"+chunk+":")
	if !ok {
		return 0, fmt.Errorf("%w %q for chunk %q", errBadCursor, cursor, chunk)
	}
	pos, err := strconv.Atoi(rest)
	if err != nil || pos < 0 {
		return 0, fmt.Errorf("%w %q", errBadCursor, cursor)
	}
	return pos, nil
}
