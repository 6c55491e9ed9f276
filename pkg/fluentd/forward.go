package fluentd

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// StatusAcked is the Result.Status of a forward message Fluentd
// acknowledged; the forward protocol has no status codes, so the HTTP
// meaning of 200 ("the events are in Fluentd's buffer") stands in for it in
// metrics and logs.
const StatusAcked = 200

// Forward sends records to Fluentd's in_forward input (Fluentd's own
// protocol, also spoken by Fluent Bit): over TLS with the client
// certificate of the [fluentd] section (or plain TCP when allowed), with the
// shared-key handshake when a shared key is set, one PackedForward message
// per Send (optionally gzip-compressed) carrying a `chunk` id, and success
// only once Fluentd answers {"ack": chunk}, which it does when the events are
// in its buffer.
//
// Send is safe for concurrent use: each call takes a connection of its own
// from a pool of at most MaxConns keep-alive connections, so several
// messages are in flight at once. The target of Send is the tag, not a URL
// (see Tags). Errors are classified as Client's are: a record the client
// cannot send (not a JSON object, a `time` that is not a time) is a
// *RefusedError; a missing or wrong answer, a refused handshake, a closed
// or failed connection are retryable (*TransportError, *HandshakeError).
// Nothing is reported sent that Fluentd did not acknowledge.
type Forward struct {
	url       string // for messages: tls://host:port
	addr      string // host:port
	tls       *tls.Config
	ca        string
	sharedKey string
	hostname  string
	user      string
	password  string
	gzip      bool
	dial      time.Duration
	ackWait   time.Duration
	log       zerolog.Logger

	slots chan struct{}
	mu    sync.Mutex
	idle  []*forwardConn
	encs  sync.Pool
}

// ForwardScheme reports whether a fluentd url is for in_forward (tls:// or
// tcp://) rather than in_http.
func ForwardScheme(rawURL string) bool {
	return strings.HasPrefix(rawURL, "tls://") || strings.HasPrefix(rawURL, "tcp://")
}

// Tags are the tags of forward messages: Audit for audit events, and
// Session(sid) for the events of session sid.
type Tags struct {
	Audit string
	// SessionPrefix is followed by ".<sid>.log".
	SessionPrefix string
}

// Session is the tag of session sid's events: the tag in_http gives them
// with the same configuration ("session.<sid>.log").
func (t Tags) Session(sid string) string { return t.SessionPrefix + "." + sid + ".log" }

// ForwardTags works out the tags from the [fluentd] section: the tag key,
// else the path of url (tls://host:24224/test.log, as in_http's URL path is
// its tag); the session-tag key, else the path of session-url (so an
// in_http session-url gives the same session.<sid>.log tags).
func ForwardTags(cfg config.FluentdConfig) (Tags, error) {
	t := Tags{Audit: cfg.Tag, SessionPrefix: cfg.SessionTag}
	if t.Audit == "" {
		t.Audit = urlTag(cfg.URL)
	}
	if t.SessionPrefix == "" {
		t.SessionPrefix = urlTag(cfg.SessionURL)
	}
	if t.Audit == "" {
		return Tags{}, fmt.Errorf("fluentd url %q has no tag for audit events: add it as the path (tls://host:24224/test.log) or set fluentd.tag", cfg.URL)
	}
	if t.SessionPrefix == "" {
		return Tags{}, errors.New("no tag for session events: set fluentd.session-tag (\"session\" gives session.<sid>.log) or a fluentd session-url with the tag as its path")
	}
	return t, nil
}

func urlTag(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ReplaceAll(strings.Trim(u.Path, "/"), "/", ".")
}

// NewForward builds a Forward client from the [fluentd] section: URL
// tls://host:port (tcp:// only with InsecureTCP), the CA, client
// certificate and key (an encrypted key is opened as New does), the shared
// key (SharedKey or the first line of SharedKeyFile) with SelfHostname (the
// host name when empty), Username and Password (or PasswordFile), at most
// MaxConns connections, DialTimeout for connecting and the handshake, and
// ResponseTimeout for each ack. gzip sends CompressedPackedForward.
func NewForward(cfg config.FluentdConfig, log zerolog.Logger, gzip bool) (*Forward, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("fluentd url %q: %w", cfg.URL, err)
	}
	f := &Forward{
		url:     u.Scheme + "://" + u.Host,
		addr:    u.Host,
		ca:      cfg.CA,
		gzip:    gzip,
		dial:    orDefault(cfg.DialTimeout, DefaultDialTimeout),
		ackWait: orDefault(cfg.ResponseTimeout, DefaultResponseTimeout),
		log:     log,
		encs:    sync.Pool{New: func() any { return new(forwardEncoder) }},
	}
	if u.Port() == "" {
		f.addr = net.JoinHostPort(u.Hostname(), "24224")
	}
	switch u.Scheme {
	case "tls":
		if f.tls, err = tlsConfig(cfg); err != nil {
			return nil, err
		}
		if f.tls.ServerName == "" {
			f.tls.ServerName = u.Hostname()
		}
	case "tcp":
		if !cfg.InsecureTCP {
			return nil, fmt.Errorf("fluentd url %q is plain tcp: refused unless --insecure-tcp (insecure-tcp = true) is set", cfg.URL)
		}
	default:
		return nil, fmt.Errorf("fluentd url %q: scheme must be tls (or tcp with insecure-tcp) for in_forward", cfg.URL)
	}
	if f.sharedKey, err = secret(cfg.SharedKey, cfg.SharedKeyFile, "shared key"); err != nil {
		return nil, err
	}
	if f.password, err = secret(cfg.Password, cfg.PasswordFile, "password"); err != nil {
		return nil, err
	}
	f.user = cfg.Username
	if f.user != "" && f.sharedKey == "" {
		return nil, errors.New("fluentd username is set but no shared key: in_forward checks users only in the shared-key handshake")
	}
	f.hostname = cfg.SelfHostname
	if f.hostname == "" {
		if f.hostname, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("fluentd self-hostname is empty and the host name cannot be read: %w", err)
		}
	}
	conns := cfg.MaxConns
	if conns <= 0 {
		conns = DefaultMaxConns
	}
	f.slots = make(chan struct{}, conns)
	return f, nil
}

// secret is value, or the first line of file.
func secret(value, file, what string) (string, error) {
	if value != "" || file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read fluentd %s file %q: %w", what, file, err)
	}
	s := strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	if s == "" {
		return "", fmt.Errorf("fluentd %s file %q is empty", what, file)
	}
	return s, nil
}

// URL is the server's address as configured, for logs.
func (f *Forward) URL() string { return f.url }

// Close closes the idle connections.
func (f *Forward) Close() {
	f.mu.Lock()
	idle := f.idle
	f.idle = nil
	f.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// Probe connects and, with a shared key, runs the handshake once, so a
// setup error shows at start-up. Only a refused handshake is returned (a
// *HandshakeError: wrong shared key, user or password, a server that is not
// the one with our key); a server that cannot be reached now is not an
// error, as the sink retries.
func (f *Forward) Probe(ctx context.Context) error {
	c, err := f.connect(ctx)
	if err != nil {
		var he *HandshakeError
		if errors.As(err, &he) {
			return err
		}
		f.log.Warn().Err(err).Msg("fluentd in_forward not reachable at start-up; the sink retries")
		return nil
	}
	f.put(c)
	return nil
}

// Send sends records to tag as one PackedForward message and waits for its
// ack. The Result's Status is StatusAcked on success, else 0.
func (f *Forward) Send(ctx context.Context, tag string, records []json.RawMessage) (Result, error) {
	if len(records) == 0 {
		return Result{}, nil
	}
	enc := f.encs.Get().(*forwardEncoder)
	defer f.putEncoder(enc)
	chunk, err := newChunkID()
	if err != nil {
		return Result{}, err
	}
	msg, err := enc.packedForward(tag, records, chunk, f.gzip, time.Now())
	if err != nil {
		var re *recordError
		if errors.As(err, &re) {
			return Result{Answer: "not sent: " + re.Error()}, &RefusedError{URL: f.url + " tag " + tag, Records: len(records),
				Result: Result{Answer: "not sent: " + re.Error()}}
		}
		return Result{}, fmt.Errorf("encode %d records for %s tag %s: %w", len(records), f.url, tag, err)
	}
	if err := f.acquire(ctx); err != nil {
		return Result{}, &TransportError{Op: "send to", URL: f.url, CA: f.ca, Err: err}
	}
	defer func() { <-f.slots }()
	for attempt := 0; ; attempt++ {
		c, reused, err := f.get(ctx)
		if err != nil {
			return Result{}, err
		}
		err = c.send(ctx, msg, chunk, f.ackWait)
		if err == nil {
			f.put(c)
			return Result{Status: StatusAcked, Answer: "ack " + chunk}, nil
		}
		c.close()
		// A kept-alive connection the server has closed since its last use
		// fails at once; the message was not taken, so it goes out again on
		// a new connection (at-least-once: an ack lost in a crash may still
		// make it a duplicate).
		if reused && attempt == 0 && staleConn(err) && ctx.Err() == nil {
			continue
		}
		return Result{}, &TransportError{Op: "send to", URL: f.url, CA: f.ca,
			Err: fmt.Errorf("tag %s, %d events, chunk %s: %w", tag, len(records), chunk, err)}
	}
}

func (f *Forward) acquire(ctx context.Context) error {
	select {
	case f.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// get returns an idle connection or a new one; reused tells which.
func (f *Forward) get(ctx context.Context) (c *forwardConn, reused bool, err error) {
	f.mu.Lock()
	if n := len(f.idle); n > 0 {
		c = f.idle[n-1]
		f.idle = f.idle[:n-1]
	}
	f.mu.Unlock()
	if c != nil {
		return c, true, nil
	}
	c, err = f.connect(ctx)
	if err != nil {
		return nil, false, err
	}
	return c, false, nil
}

// put keeps c for the next Send, unless the server said it closes
// connections after each message (keepalive false in its HELO).
func (f *Forward) put(c *forwardConn) {
	if !c.keepalive {
		c.close()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.idle) >= cap(f.slots) {
		c.close()
		return
	}
	f.idle = append(f.idle, c)
}

func (f *Forward) putEncoder(e *forwardEncoder) {
	// Do not keep very large buffers alive between sends.
	if cap(e.msg) > 8<<20 || cap(e.entries) > 8<<20 {
		return
	}
	f.encs.Put(e)
}

// newChunkID is a random 16-byte id in base64, as out_forward makes them.
func newChunkID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("chunk id: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b[:]), nil
}

// recordError is a record the client cannot send.
type recordError struct {
	index, of int
	err       error
}

func (e *recordError) Error() string {
	return fmt.Sprintf("event %d of %d: %v", e.index+1, e.of, e.err)
}

func (e *recordError) Unwrap() error { return e.err }

// forwardEncoder builds messages, reusing its buffers from one to the next.
type forwardEncoder struct {
	tr      transcoder
	msg     []byte
	entries []byte
	gz      *gzip.Writer
	gzBuf   sliceWriter
}

// packedForward builds [tag, bin(entries), {size, chunk[, compressed]}]
// where entries are the records' [EventTime, map] pairs back to back. The
// result is valid until the next call.
func (e *forwardEncoder) packedForward(tag string, records []json.RawMessage, chunk string, gz bool, now time.Time) ([]byte, error) {
	e.entries = e.entries[:0]
	for i, r := range records {
		e.tr.out = e.tr.out[:0]
		if err := e.tr.record(r); err != nil {
			return nil, &recordError{index: i, of: len(records), err: err}
		}
		t, err := e.tr.eventTime(now)
		if err != nil {
			return nil, &recordError{index: i, of: len(records), err: err}
		}
		e.entries = append(e.entries, 0x92)
		e.entries = appendEventTime(e.entries, t.Unix(), t.Nanosecond())
		e.entries = append(e.entries, e.tr.out...)
	}
	body := e.entries
	if gz {
		e.gzBuf.b = e.gzBuf.b[:0]
		if e.gz == nil {
			e.gz = gzip.NewWriter(&e.gzBuf)
		} else {
			e.gz.Reset(&e.gzBuf)
		}
		if _, err := e.gz.Write(e.entries); err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		if err := e.gz.Close(); err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		body = e.gzBuf.b
	}
	m := append(e.msg[:0], 0x93)
	m = appendString(m, tag)
	m = appendBin32Header(m, len(body))
	m = append(m, body...)
	if gz {
		m = appendMapHeader(m, 3)
	} else {
		m = appendMapHeader(m, 2)
	}
	m = appendString(m, "size")
	m = appendInt(m, int64(len(records)))
	m = appendString(m, "chunk")
	m = appendString(m, chunk)
	if gz {
		m = appendString(m, "compressed")
		m = appendString(m, "gzip")
	}
	e.msg = m
	return m, nil
}

// eventTime is the record's time: its top-level `time` (RFC 3339 with
// nanoseconds, as Teleport writes it; or `%Y-%m-%dT%H:%M:%S` with anything
// after the seconds ignored, read as UTC, as in_http reads it), or now when
// the record has none — as Fluentd stamps a record without a time.
func (t *transcoder) eventTime(now time.Time) (time.Time, error) {
	if !t.hasTime {
		return now, nil
	}
	if !t.timeIsStr {
		return time.Time{}, errors.New("`time` is not a string")
	}
	s := string(t.timeField)
	if ts, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return ts, nil
	}
	const layout = "2006-01-02T15:04:05"
	if len(s) >= len(layout) {
		if ts, err := time.Parse(layout, s[:len(layout)]); err == nil {
			return ts, nil
		}
	}
	return time.Time{}, fmt.Errorf("`time` %q is not an RFC 3339 time", s)
}

// sliceWriter is an io.Writer appending to b.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
