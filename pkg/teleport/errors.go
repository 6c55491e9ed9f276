package teleport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/gravitational/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrIdentityExpired is wrapped by connection errors caused by an expired
// client certificate (identity file or cert/key pair).
var ErrIdentityExpired = errors.New("teleport identity expired")

// ErrUnknownAuthority is wrapped by connection errors caused by a server
// certificate the configured CA did not sign (wrong CA, or wrong address).
var ErrUnknownAuthority = errors.New("teleport server certificate not signed by the configured CA")

// ErrAccessDenied is wrapped by errors the server answered with
// PermissionDenied or Unauthenticated: a role problem, not a network one.
var ErrAccessDenied = errors.New("teleport access denied")

// IsNotImplemented reports whether err says the server does not know the
// call: gRPC Unimplemented, or trace's NotImplemented. Older Teleport
// servers answer this way to the bulk export API and to
// StreamUnstructuredSessionEvents.
func IsNotImplemented(err error) bool {
	if err == nil {
		return false
	}
	if trace.IsNotImplemented(err) {
		return true
	}
	return grpcCode(err) == codes.Unimplemented
}

// IsNotFound reports whether err says the thing asked for does not exist,
// e.g. a session recording that has not been uploaded yet.
func IsNotFound(err error) bool {
	if err == nil {
		return false
	}
	if trace.IsNotFound(err) {
		return true
	}
	return grpcCode(err) == codes.NotFound
}

// IsTransient reports whether err is worth retrying: the server was
// unreachable, overloaded or slow (gRPC Unavailable, ResourceExhausted,
// DeadlineExceeded, Aborted), or the connection broke. Expired identities,
// wrong CAs and denied access are not transient. Context cancellation of
// the caller is not transient either; check ctx.Err() separately.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrIdentityExpired) || errors.Is(err, ErrUnknownAuthority) || errors.Is(err, ErrAccessDenied) {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	switch grpcCode(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Aborted:
		return true
	case codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument, codes.NotFound:
		return false
	}
	if trace.IsConnectionProblem(err) || trace.IsLimitExceeded(err) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// grpcCode finds the gRPC status code inside err, through trace wrappers.
func grpcCode(err error) codes.Code {
	for e := err; e != nil; {
		if s, ok := status.FromError(e); ok && s.Code() != codes.Unknown {
			return s.Code()
		}
		if te, ok := e.(interface{ OrigError() error }); ok && te.OrigError() != e {
			e = te.OrigError()
			continue
		}
		e = errors.Unwrap(e)
	}
	return codes.OK
}

// classify turns a handshake failure into one of the named errors when
// its text tells what happened. gRPC hides the TLS error behind
// "context deadline exceeded" in many cases, so Connect also probes the
// handshake itself (see probeHandshake).
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrIdentityExpired) || errors.Is(err, ErrUnknownAuthority) || errors.Is(err, ErrAccessDenied) {
		return err
	}
	if named := certError(err); named != nil {
		return named
	}
	switch grpcCode(err) {
	case codes.PermissionDenied, codes.Unauthenticated:
		return fmt.Errorf("%w: %v", ErrAccessDenied, err)
	}
	if trace.IsAccessDenied(err) {
		return fmt.Errorf("%w: %v", ErrAccessDenied, err)
	}
	return err
}
