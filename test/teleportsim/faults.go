package teleportsim

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Fault messages clients see.
const (
	unavailableMessage = "simulated fault: auth server is unavailable"
	rateLimitMessage   = "rate limit exceeded"
	streamCutMessage   = "simulated fault: stream cut"
)

// injector applies the Faults in force to every RPC except Ping.
type injector struct {
	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand
	calls  map[codes.Code]int // injected errors by code
}

func newInjector(seed uint64, f Faults) *injector {
	return &injector{faults: f, rng: newRand(seed, 0xfa17), calls: make(map[codes.Code]int)}
}

func (in *injector) set(f Faults) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.faults = f
}

func (in *injector) get() Faults {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.faults
}

// injected returns how many errors of each code were injected.
func (in *injector) injected() map[codes.Code]int {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make(map[codes.Code]int, len(in.calls))
	for c, n := range in.calls {
		out[c] = n
	}
	return out
}

// before waits the latency and rolls for an error; it returns the faults in
// force for the call.
func (in *injector) before(ctx context.Context, method string) (Faults, error) {
	in.mu.Lock()
	f := in.faults
	roll := in.rng.Float64()
	in.mu.Unlock()
	if strings.HasSuffix(method, "/Ping") {
		return Faults{}, nil
	}
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return f, status.FromContextError(ctx.Err()).Err()
		case <-t.C:
		}
	}
	switch {
	case roll < f.UnavailableRate:
		return f, in.count(status.Error(codes.Unavailable, unavailableMessage))
	case roll < f.UnavailableRate+f.RateLimitRate:
		return f, in.count(status.Error(codes.ResourceExhausted, rateLimitMessage))
	}
	return f, nil
}

func (in *injector) count(err error) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.calls[status.Code(err)]++
	return err
}

func (in *injector) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if _, err := in.before(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (in *injector) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	f, err := in.before(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if f.CutAfter > 0 {
		ss = &cutStream{ServerStream: ss, left: f.CutAfter, in: in}
	}
	return handler(srv, ss)
}

// cutStream fails the stream with Unavailable once it has sent its messages.
type cutStream struct {
	grpc.ServerStream
	left int
	in   *injector
}

func (c *cutStream) SendMsg(m any) error {
	if c.left == 0 {
		return c.in.count(status.Error(codes.Unavailable, streamCutMessage))
	}
	c.left--
	return c.ServerStream.SendMsg(m)
}
