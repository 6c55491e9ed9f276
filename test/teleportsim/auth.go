package teleportsim

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gravitational/teleport/api/client/proto"
	"github.com/gravitational/teleport/api/types"
	apievents "github.com/gravitational/teleport/api/types/events"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// authService serves the parts of proto.AuthService an exporter uses.
type authService struct {
	proto.UnimplementedAuthServiceServer
	s *Server
}

// Ping reports the cluster name and server version.
func (a *authService) Ping(ctx context.Context, _ *proto.PingRequest) (*proto.PingResponse, error) {
	version := CurrentVersion
	if a.s.opts.Older {
		version = OlderVersion
	}
	resp := &proto.PingResponse{
		ClusterName:    a.s.opts.ClusterName,
		ServerVersion:  version,
		ServerFeatures: &proto.Features{AdvancedAccessWorkflows: true},
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		resp.RemoteAddr = p.Addr.String()
	}
	return resp, nil
}

// GetEvents answers SearchEvents with structured events.
func (a *authService) GetEvents(ctx context.Context, req *proto.GetEventsRequest) (*proto.Events, error) {
	return a.events(ctx, req.StartDate, req.EndDate, req.EventTypes, req.Limit, types.EventOrder(req.Order), req.StartKey)
}

// GetSessionEvents answers SearchSessionEvents: the session.end events.
func (a *authService) GetSessionEvents(ctx context.Context, req *proto.GetSessionEventsRequest) (*proto.Events, error) {
	return a.events(ctx, req.StartDate, req.EndDate, []string{"session.end"}, req.Limit, types.EventOrder(req.Order), req.StartKey)
}

func (a *authService) events(ctx context.Context, from, to time.Time, eventTypes []string, limit int32, order types.EventOrder, startKey string) (*proto.Events, error) {
	q, err := newQuery(from, to, eventTypes, limit, order, startKey)
	if err != nil {
		return nil, err
	}
	items, lastKey, err := page(ctx, a.s.st, q, a.s.opts.Search, func(h hit) (*apievents.OneOf, int, error) {
		ev := a.s.st.render(h)
		o, err := apievents.ToOneOf(ev)
		if err != nil {
			return nil, 0, status.Errorf(codes.Internal, "convert event %s: %v", ev.GetID(), err)
		}
		return o, o.Size(), nil
	})
	if err != nil {
		return nil, err
	}
	return &proto.Events{Items: items, LastKey: lastKey}, nil
}

// StreamSessionEvents streams a session recording as structured events; it
// works in Older mode too.
func (a *authService) StreamSessionEvents(req *proto.StreamSessionEventsRequest, stream proto.AuthService_StreamSessionEventsServer) error {
	n, err := a.s.recordingAvailable(req.SessionID)
	if err != nil {
		return err
	}
	for _, ev := range a.s.st.recording(n, int64(req.StartIndex)) {
		if err := stream.Context().Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		o, err := apievents.ToOneOf(ev)
		if err != nil {
			return status.Errorf(codes.Internal, "convert session event %d: %v", ev.GetIndex(), err)
		}
		if err := stream.Send(o); err != nil {
			return err
		}
	}
	return nil
}

// UpsertLock records a lock.
func (a *authService) UpsertLock(_ context.Context, lock *types.LockV2) (*emptypb.Empty, error) {
	if a.s.opts.DenyLocks {
		return nil, status.Error(codes.PermissionDenied, `access denied to perform action "create" on "lock"`)
	}
	if err := a.s.locks.upsert(lock, a.s.opts.Now()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &emptypb.Empty{}, nil
}

// GetLocks returns the recorded locks matching any of the targets.
func (a *authService) GetLocks(_ context.Context, req *proto.GetLocksRequest) (*proto.GetLocksResponse, error) {
	return &proto.GetLocksResponse{Locks: a.s.locks.get(req.InForceOnly, req.Targets, a.s.opts.Now())}, nil
}

// lockStore holds the locks clients upserted, by name.
type lockStore struct {
	mu    sync.Mutex
	locks map[string]*types.LockV2
}

func (l *lockStore) upsert(lock *types.LockV2, now time.Time) error {
	if lock == nil {
		return fmt.Errorf("missing lock")
	}
	lock, err := cloneLock(lock)
	if err != nil {
		return err
	}
	if err := lock.CheckAndSetDefaults(); err != nil {
		return fmt.Errorf("invalid lock %q: %w", lock.GetName(), err)
	}
	if lock.CreatedAt().IsZero() {
		lock.SetCreatedAt(now.UTC())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = make(map[string]*types.LockV2)
	}
	l.locks[lock.GetName()] = lock
	return nil
}

func (l *lockStore) get(inForceOnly bool, targets []*types.LockTarget, now time.Time) []*types.LockV2 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*types.LockV2
	for _, lock := range l.locks {
		if inForceOnly && !lock.IsInForce(now) {
			continue
		}
		if len(targets) > 0 && !slices.ContainsFunc(targets, func(t *types.LockTarget) bool { return t != nil && t.Match(lock) }) {
			continue
		}
		if c, err := cloneLock(lock); err == nil {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *types.LockV2) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// cloneLock deep-copies a lock so callers never share the stored one.
func cloneLock(lock *types.LockV2) (*types.LockV2, error) {
	raw, err := lock.Marshal()
	if err != nil {
		return nil, fmt.Errorf("copy lock %q: %w", lock.GetName(), err)
	}
	var c types.LockV2
	if err := c.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("copy lock %q: %w", lock.GetName(), err)
	}
	return &c, nil
}
