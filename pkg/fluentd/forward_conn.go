package fluentd

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// maxAnswerBytes bounds what the client reads for one answer from the
// server (HELO, PONG or an ack are a few hundred bytes).
const maxAnswerBytes = 64 << 10

// HandshakeError is a shared-key handshake that did not establish the
// connection: the server refused our PING (wrong shared key, user or
// password; its reason is in Reason), or its PONG did not prove it knows
// the shared key, or it sent something that is not the handshake. Sending
// again will fail the same way until the configuration is fixed.
type HandshakeError struct {
	URL    string
	Reason string
}

// Error names the server and the reason.
func (e *HandshakeError) Error() string {
	return fmt.Sprintf("fluentd %s: shared-key handshake failed: %s", e.URL, e.Reason)
}

// forwardConn is one connection to in_forward, established (TLS done and,
// with a shared key, the handshake too) and used by one Send at a time.
type forwardConn struct {
	url       string
	conn      net.Conn
	lim       *io.LimitedReader
	dec       *msgpack.Decoder
	keepalive bool
}

// connect dials, completes TLS, and runs the handshake when a shared key is
// set, all within the dial timeout.
func (f *Forward) connect(ctx context.Context) (*forwardConn, error) {
	ctx, cancel := context.WithTimeout(ctx, f.dial)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", f.addr)
	if err != nil {
		return nil, &TransportError{Op: "connect to", URL: f.url, CA: f.ca, Err: err}
	}
	conn := raw
	if f.tls != nil {
		tc := tls.Client(raw, f.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, &TransportError{Op: "connect to", URL: f.url, CA: f.ca, Err: fmt.Errorf("TLS handshake: %w", err)}
		}
		conn = tc
	}
	lim := &io.LimitedReader{R: conn}
	c := &forwardConn{url: f.url, conn: conn, lim: lim, dec: msgpack.NewDecoder(bufio.NewReaderSize(lim, 4096)), keepalive: true}
	if f.sharedKey == "" {
		return c, nil
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	err = f.handshake(c)
	stop()
	if err != nil {
		c.close()
		var he *HandshakeError
		if errors.As(err, &he) {
			return nil, err
		}
		if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w (no HELO within %s: does in_forward have a <security> section?)", err, f.dial)
		}
		return nil, &TransportError{Op: "connect to", URL: f.url, CA: f.ca, Err: fmt.Errorf("shared-key handshake: %w", err)}
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// handshake reads HELO, sends PING and checks PONG (Forward Protocol
// Specification v1; digests as in_forward computes them).
func (f *Forward) handshake(c *forwardConn) error {
	helo, err := c.read()
	if err != nil {
		return err
	}
	nonce, auth, keepalive, ok := parseHelo(helo)
	if !ok {
		return &HandshakeError{URL: f.url, Reason: fmt.Sprintf("expected HELO, the server sent %s", describe(helo))}
	}
	c.keepalive = keepalive
	var saltBytes [16]byte
	if _, err := rand.Read(saltBytes[:]); err != nil {
		return fmt.Errorf("salt: %w", err)
	}
	salt := hex.EncodeToString(saltBytes[:])
	user, passDigest := "", ""
	if len(auth) > 0 {
		user = f.user
		passDigest = sha512Hex(auth, []byte(f.user), []byte(f.password))
	}
	ping := appendArrayHeader(nil, 6)
	ping = appendString(ping, "PING")
	ping = appendString(ping, f.hostname)
	ping = appendString(ping, salt)
	ping = appendString(ping, sha512Hex([]byte(salt), []byte(f.hostname), nonce, []byte(f.sharedKey)))
	ping = appendString(ping, user)
	ping = appendString(ping, passDigest)
	if _, err := c.conn.Write(ping); err != nil {
		return fmt.Errorf("send PING: %w", err)
	}
	pong, err := c.read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return &HandshakeError{URL: f.url, Reason: "the server closed the connection instead of answering PING"}
		}
		return err
	}
	return f.checkPong(pong, salt, nonce)
}

func (f *Forward) checkPong(v any, salt string, nonce []byte) error {
	a, ok := v.([]any)
	if !ok || len(a) != 5 || asString(a[0]) != "PONG" {
		return &HandshakeError{URL: f.url, Reason: fmt.Sprintf("expected PONG, the server sent %s", describe(v))}
	}
	if okAuth, _ := a[1].(bool); !okAuth {
		reason := asString(a[2])
		hint := ""
		switch reason {
		case "shared_key mismatch":
			hint = " (fluentd.shared-key-file differs from <security> shared_key)"
		case "username/password mismatch":
			hint = " (check fluentd.username and fluentd.password-file against <security> <user>)"
		}
		return &HandshakeError{URL: f.url, Reason: fmt.Sprintf("the server refused us: %q%s", reason, hint)}
	}
	host := asString(a[3])
	if host == f.hostname {
		return &HandshakeError{URL: f.url, Reason: fmt.Sprintf("the server's self_hostname is ours (%q): set a different fluentd.self-hostname", host)}
	}
	want := sha512Hex([]byte(salt), []byte(host), nonce, []byte(f.sharedKey))
	if asString(a[4]) != want {
		return &HandshakeError{URL: f.url, Reason: "the server's PONG digest does not match our shared key: it is not the Fluentd we share the key with"}
	}
	return nil
}

// parseHelo reads ["HELO", {nonce, auth, keepalive}].
func parseHelo(v any) (nonce, auth []byte, keepalive, ok bool) {
	a, isArr := v.([]any)
	if !isArr || len(a) != 2 || asString(a[0]) != "HELO" {
		return nil, nil, false, false
	}
	opts, _ := a[1].(map[string]any)
	keepalive = true
	if k, isBool := opts["keepalive"].(bool); isBool {
		keepalive = k
	}
	return asBytes(opts["nonce"]), asBytes(opts["auth"]), keepalive, true
}

// send writes msg and waits up to wait for {"ack": chunk}.
func (c *forwardConn) send(ctx context.Context, msg []byte, chunk string, wait time.Duration) error {
	if err := c.conn.SetDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.conn.Write(msg); err != nil {
		return c.explain(ctx, fmt.Errorf("write: %w", err), wait)
	}
	ans, err := c.read()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errClosedBeforeAck
		}
		return c.explain(ctx, err, wait)
	}
	m, ok := ans.(map[string]any)
	if !ok || asString(m["ack"]) != chunk {
		if _, helo := parseHeloName(ans); helo {
			return &HandshakeError{URL: c.url, Reason: "the server sent HELO: it requires the shared-key handshake (set fluentd.shared-key-file)"}
		}
		return fmt.Errorf("the server answered %s instead of the ack of our chunk", describe(ans))
	}
	return nil
}

var errClosedBeforeAck = errors.New("the server closed the connection before acknowledging the message")

// explain turns a deadline into a missing ack and keeps other errors.
func (c *forwardConn) explain(ctx context.Context, err error, wait time.Duration) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no ack within %s (fluentd.response-timeout)", wait)
	}
	return err
}

// read decodes one value from the server, at most maxAnswerBytes long.
func (c *forwardConn) read() (any, error) {
	c.lim.N = maxAnswerBytes
	v, err := c.dec.DecodeInterface()
	if err != nil && c.lim.N <= 0 {
		return nil, fmt.Errorf("the server's answer is longer than %d bytes", maxAnswerBytes)
	}
	return v, err
}

func (c *forwardConn) close() { _ = c.conn.Close() }

// staleConn reports whether err is what a kept-alive connection closed by
// the server gives on its next use.
func staleConn(err error) bool {
	return errors.Is(err, errClosedBeforeAck) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func parseHeloName(v any) (string, bool) {
	a, ok := v.([]any)
	if ok && len(a) == 2 && asString(a[0]) == "HELO" {
		return "HELO", true
	}
	return "", false
}

func sha512Hex(parts ...[]byte) string {
	h := sha512.New()
	for _, p := range parts {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func asString(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case []byte:
		return string(s)
	}
	return ""
}

func asBytes(v any) []byte {
	switch s := v.(type) {
	case string:
		return []byte(s)
	case []byte:
		return s
	}
	return nil
}

// describe shows an unexpected answer in an error message, shortened.
func describe(v any) string {
	s := fmt.Sprintf("%#v", v)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
