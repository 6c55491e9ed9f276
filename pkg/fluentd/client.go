// Package fluentd is the last stage of the pipeline: the clients for
// Fluentd's two network inputs. Client (client.go) posts to in_http (and
// Fluent Bit's http input) over HTTPS; Forward (forward.go, forward_conn.go,
// msgpack.go) speaks in_forward, Fluentd's own protocol, over TLS with the
// shared-key handshake and acks. Each owns its mTLS connection pool, its
// wire format, and the classification of Fluentd's answers into success,
// refusal and retryable failure. They know nothing about JetStream; the sink
// decides what to acknowledge from the errors Send returns.
package fluentd

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/http/httpproxy"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// Defaults used for the zero fields of config.FluentdConfig.
const (
	DefaultDialTimeout     = 10 * time.Second
	DefaultResponseTimeout = 30 * time.Second
	DefaultMaxConns        = 8
)

// writeBufferSize is the connections' write buffer (see New).
const writeBufferSize = 64 << 10

// maxAnswer is how much of Fluentd's answer body a Result keeps; the rest is
// read and discarded so the connection can be reused.
const (
	maxAnswer  = 512
	maxDiscard = 64 << 10
)

// Result is Fluentd's answer to one request.
type Result struct {
	// Status is the HTTP status code; 0 when no answer arrived.
	Status int
	// Answer is the start of the response body, for logs and dead letters.
	Answer string
}

// OK reports whether the answer was a 2xx: Fluentd (200) and Fluent Bit
// (201) both accepted the records.
func (r Result) OK() bool { return r.Status >= 200 && r.Status < 300 }

// Option changes how a Client sends.
type Option func(*Client)

// WithGzip compresses request bodies (Content-Encoding: gzip), which in_http
// accepts.
func WithGzip(on bool) Option { return func(c *Client) { c.gzip = on } }

// WithTransport replaces the HTTP transport, for tests and benchmarks that
// need to count connections. The transport's TLS settings are then the
// caller's.
func WithTransport(rt http.RoundTripper) Option { return func(c *Client) { c.http.Transport = rt } }

// Client posts records to Fluentd. It is safe for concurrent use; requests
// share one bounded pool of keep-alive connections.
type Client struct {
	http    *http.Client
	log     zerolog.Logger
	ca      string
	gzip    bool
	timeout time.Duration
	bufs    sync.Pool
}

// New builds a Client from the [fluentd] section: the CA that signs
// Fluentd's certificate (system roots when empty), the client certificate
// and key (an encrypted key is opened with KeyPassphrase or the contents of
// KeyPassphraseFile), TLS 1.2 or newer, an optional server name override, the
// proxy from HTTPS_PROXY/NO_PROXY (read when New is called; like Go's
// default, never for localhost or loopback addresses), and at most MaxConns
// connections per host.
// A plain http:// URL is refused unless InsecureHTTP is set.
func New(cfg config.FluentdConfig, log zerolog.Logger, opts ...Option) (*Client, error) {
	for _, u := range []struct{ key, val string }{{"url", cfg.URL}, {"session-url", cfg.SessionURL}} {
		if err := checkURL(u.key, u.val, cfg.InsecureHTTP); err != nil {
			return nil, err
		}
	}
	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	dial := orDefault(cfg.DialTimeout, DefaultDialTimeout)
	resp := orDefault(cfg.ResponseTimeout, DefaultResponseTimeout)
	conns := cfg.MaxConns
	if conns <= 0 {
		conns = DefaultMaxConns
	}
	tr := &http.Transport{
		Proxy:                 proxyFromEnvironment(),
		DialContext:           (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   dial,
		ResponseHeaderTimeout: resp,
		MaxConnsPerHost:       conns,
		MaxIdleConnsPerHost:   conns,
		MaxIdleConns:          2 * conns,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// A batch's body goes out through this buffer: with the default
		// 4 KB, a 100-event array became a handful of small TLS records and
		// write calls on each side; 64 KB sends it in full-size records.
		WriteBufferSize: writeBufferSize,
	}
	c := &Client{
		http: &http.Client{
			Transport: tr,
			// A redirect from in_http means a misconfigured URL; report it
			// instead of following it with the records.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		log:     log,
		ca:      cfg.CA,
		timeout: dial + resp,
		bufs:    sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// SessionURL is where the events of session sid go: the session URL with
// ".<sid>.log" appended, as teleport-event-handler does, so the tag is
// session.<sid>.log.
func SessionURL(sessionURL, sid string) string {
	return sessionURL + "." + url.PathEscape(sid) + ".log"
}

// Send posts records to target: one record as a JSON object, several as a JSON
// array, each record's bytes unchanged. It returns nil only for a 2xx. A 4xx
// about the records is a *RefusedError (Fluentd will refuse these records
// again; see refusal for the 4xx that are not); anything else (5xx, 3xx,
// timeouts, connection and TLS errors) is retryable — see Retryable. The
// Result is filled whenever Fluentd answered.
func (c *Client) Send(ctx context.Context, target string, records []json.RawMessage) (Result, error) {
	if len(records) == 0 {
		return Result{}, nil
	}
	buf := c.bufs.Get().(*bytes.Buffer)
	defer c.putBuf(buf)
	if err := c.encode(buf, records); err != nil {
		return Result{}, fmt.Errorf("encode %d records for %s: %w", len(records), target, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(buf.Bytes()))
	if err != nil {
		return Result{}, fmt.Errorf("post to fluentd %s: %w", target, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error repeats the method and URL our message already names.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return Result{}, &TransportError{URL: target, Err: err, CA: c.ca}
	}
	defer resp.Body.Close()
	res := Result{Status: resp.StatusCode, Answer: readAnswer(resp.Body)}
	switch {
	case res.OK():
		return res, nil
	case refusal(res.Status):
		return res, &RefusedError{URL: target, Result: res, Records: len(records)}
	default:
		return res, &StatusError{URL: target, Result: res}
	}
}

// refusal reports whether a status refuses the records themselves. The 4xx
// that say something about the request's path, credentials or rate (401,
// 403, 404, 405, 407, 408, 421, 429) are not: a proxy or a wrong URL answers
// them to every record, and treating them as refusals would dead-letter the
// whole stream; they are retried like a 5xx until the setup is fixed.
func refusal(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed,
		http.StatusProxyAuthRequired, http.StatusRequestTimeout, http.StatusMisdirectedRequest, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}

// encode writes the body: the record itself for one record, else a JSON
// array of them; gzipped when asked.
func (c *Client) encode(buf *bytes.Buffer, records []json.RawMessage) error {
	var w io.Writer = buf
	var zw *gzip.Writer
	if c.gzip {
		zw = gzip.NewWriter(buf)
		w = zw
	}
	if err := writeBody(w, records); err != nil {
		return err
	}
	if zw != nil {
		return zw.Close()
	}
	return nil
}

func writeBody(w io.Writer, records []json.RawMessage) error {
	if len(records) == 1 {
		_, err := w.Write(records[0])
		return err
	}
	sep := []byte{'['}
	for _, r := range records {
		if _, err := w.Write(sep); err != nil {
			return err
		}
		if _, err := w.Write(r); err != nil {
			return err
		}
		sep[0] = ','
	}
	_, err := w.Write([]byte{']'})
	return err
}

func (c *Client) putBuf(b *bytes.Buffer) {
	// Do not keep very large buffers alive between requests.
	if b.Cap() > 8<<20 {
		return
	}
	b.Reset()
	c.bufs.Put(b)
}

// readAnswer keeps the start of the body and drains a bounded rest so the
// keep-alive connection can carry the next request.
func readAnswer(r io.Reader) string {
	head, _ := io.ReadAll(io.LimitReader(r, maxAnswer))
	_, _ = io.Copy(io.Discard, io.LimitReader(r, maxDiscard))
	return strings.TrimSpace(string(head))
}

func checkURL(key, raw string, insecure bool) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("fluentd %s %q: %w", key, raw, err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if insecure {
			return nil
		}
		return fmt.Errorf("fluentd %s %q is plain http: refused unless --insecure-http (insecure-http = true) is set", key, raw)
	default:
		return fmt.Errorf("fluentd %s %q: scheme must be https", key, raw)
	}
}

// tlsConfig loads the CA pool and client key pair named in cfg.
func tlsConfig(cfg config.FluentdConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if cfg.CA != "" {
		pool, err := certs.LoadCertPool(cfg.CA)
		if err != nil {
			return nil, fmt.Errorf("fluentd ca: %w", err)
		}
		tc.RootCAs = pool
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, fmt.Errorf("fluentd cert %q and key %q: set both or neither", cfg.Cert, cfg.Key)
	}
	if cfg.Cert == "" {
		return tc, nil
	}
	pass, err := passphrase(cfg)
	if err != nil {
		return nil, err
	}
	pair, err := certs.LoadKeyPair(cfg.Cert, cfg.Key, []byte(pass))
	if err != nil {
		return nil, fmt.Errorf("fluentd client certificate: %w", err)
	}
	tc.Certificates = []tls.Certificate{pair}
	return tc, nil
}

// passphrase is KeyPassphrase, or the first line of KeyPassphraseFile.
func passphrase(cfg config.FluentdConfig) (string, error) {
	if cfg.KeyPassphrase != "" || cfg.KeyPassphraseFile == "" {
		return cfg.KeyPassphrase, nil
	}
	b, err := os.ReadFile(cfg.KeyPassphraseFile)
	if err != nil {
		return "", fmt.Errorf("read fluentd key passphrase file %q: %w", cfg.KeyPassphraseFile, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// proxyFromEnvironment reads HTTPS_PROXY, HTTP_PROXY and NO_PROXY (either
// case) now, rather than once per process as http.ProxyFromEnvironment does.
func proxyFromEnvironment() func(*http.Request) (*url.URL, error) {
	proxy := httpproxy.FromEnvironment().ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return proxy(r.URL) }
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
