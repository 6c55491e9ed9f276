package teleport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gravitational/teleport/api/client"
)

// probeTimeout bounds the diagnostic handshake.
const probeTimeout = 5 * time.Second

// probeHandshake does one TLS handshake with the first address, using the
// client's credentials, and returns a named error when the certificates
// are the problem (nil when the handshake succeeds or fails for a network
// reason). gRPC retries a failed handshake until its deadline, so without
// this the user would only see "context deadline exceeded".
func probeHandshake(ctx context.Context, addrs []string, creds client.Credentials) error {
	conf, err := creds.TLSConfig()
	if err != nil || len(addrs) == 0 {
		return nil
	}
	conf = conf.Clone()
	if conf.ServerName == "" {
		conf.ServerName = "teleport.cluster.local"
	}
	conf.NextProtos = []string{"h2"}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	d := tls.Dialer{Config: conf}
	conn, err := d.DialContext(pctx, "tcp", addrs[0])
	if err != nil {
		return certError(err)
	}
	defer conn.Close()
	// With TLS 1.3 the server checks the client certificate after the
	// client's handshake is done; its verdict arrives as an alert on the
	// first read.
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	var buf [1]byte
	_, err = conn.Read(buf[:])
	return certError(err)
}

// reachable returns nil when a TCP connection to any of addrs succeeds,
// and the last dial error otherwise (a transient error).
func reachable(ctx context.Context, addrs []string) error {
	var last error
	for _, a := range addrs {
		dctx, cancel := context.WithTimeout(ctx, probeTimeout)
		var d net.Dialer
		conn, err := d.DialContext(dctx, "tcp", a)
		cancel()
		if err == nil {
			_ = conn.Close()
			return nil
		}
		last = err
	}
	return last
}

// certError returns a named error for certificate failures and nil for
// anything else.
func certError(err error) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Errorf("%w (check teleport.ca, or the identity file's cluster): %v", ErrUnknownAuthority, err)
	case strings.Contains(msg, "expired certificate"):
		return fmt.Errorf("%w: the server says the client certificate has expired: %v", ErrIdentityExpired, err)
	case strings.Contains(msg, "x509: certificate has expired"):
		return fmt.Errorf("%w: the server's certificate has expired: %v", ErrUnknownAuthority, err)
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate authority"),
		strings.Contains(msg, "certificate required"):
		return fmt.Errorf("%w: the server rejected the client certificate (identity from another cluster?): %v", ErrAccessDenied, err)
	case strings.Contains(msg, "x509:"):
		return fmt.Errorf("%w: %v", ErrUnknownAuthority, err)
	}
	return nil
}
