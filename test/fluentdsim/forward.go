package fluentdsim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// The in_forward side of the double. It behaves as Fluentd's in_forward
// (lib/fluent/plugin/in_forward.rb, Forward Protocol Specification v1) with
// <transport tls> client_cert_auth and, when Options.SharedKey is set, a
// <security> section; see TestForwardBehaviour in forward_test.go for the table
// it is tested against:
//
//   - TLS: a client certificate from the CA is required; the handshake
//     fails otherwise and is counted in HandshakeErrors.
//   - With a shared key: the server sends ["HELO", {nonce, auth, keepalive}]
//     (nonce and auth 16 random bytes, as bin), expects ["PING", hostname,
//     salt, sha512_hex(salt+hostname+nonce+key), user, sha512_hex(auth+user+
//     password)] and answers ["PONG", true, "", self_hostname,
//     sha512_hex(salt+self_hostname+nonce+key)], or ["PONG", false, reason,
//     "", ""] and closes the connection: reason "shared_key mismatch",
//     "username/password mismatch" (with Users) or "invalid ping message".
//   - Messages: Message [tag, time, record(, option)], Forward [tag,
//     [[time, record]…](, option)], PackedForward [tag, bin|str entries(,
//     option)], with option compressed "gzip" for CompressedPackedForward.
//     time is an integer or EventTime (ext 0); an entry whose time is
//     neither, or whose record is not a map, is dropped (skip_invalid_event,
//     counted in Dropped); a record without time is stamped now.
//   - When the option has "chunk", the answer is {"ack": chunk}, sent once the
//     records are stored; without it there is no answer.
//   - Something that is not an array is ignored ("incoming chunk is broken").
//   - Faults: EmitFail, ErrorPercent and Poison make the emit fail, which in
//     Fluentd raises out of the connection's handler: the connection is
//     closed, nothing stored, no ack. DropPercent closes the connection
//     without storing. NoAck stores and never answers. Latency delays the
//     ack after storing. Down closes the listener and every connection.

// forwardListener is the in_forward endpoint of a Server.
type forwardListener struct {
	addr   string
	chosen bool // the kernel chose addr's port: held while down (port.go)

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	ended chan struct{} // closed and replaced when a connection ends
	wg    sync.WaitGroup
}

// ForwardAddr is the in_forward endpoint's host:port ("" without one).
func (s *Server) ForwardAddr() string {
	if s.fwd == nil {
		return ""
	}
	return s.fwd.addr
}

// ForwardURL is "tls://host:port" (tcp:// with PlainHTTP), "" without an
// in_forward endpoint.
func (s *Server) ForwardURL() string {
	if s.fwd == nil {
		return ""
	}
	if s.tls == nil {
		return "tcp://" + s.fwd.addr
	}
	return "tls://" + s.fwd.addr
}

// startForward listens on opts.ForwardAddr.
func (s *Server) startForward() error {
	chosen := chosenPort(s.opts.ForwardAddr)
	ln, err := listenTCP(s.opts.ForwardAddr, chosen)
	if err != nil {
		return fmt.Errorf("in_forward: %w", err)
	}
	s.fwd = &forwardListener{addr: ln.Addr().String(), chosen: chosen, conns: map[net.Conn]struct{}{}, ended: make(chan struct{})}
	s.serveForwardOn(ln)
	return nil
}

func (s *Server) serveForwardOn(ln net.Listener) {
	f := s.fwd
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if !f.track(conn) {
				conn.Close()
				return
			}
			f.wg.Go(func() {
				defer f.untrack(conn)
				s.serveForwardConn(conn)
			})
		}
	})
}

func (f *forwardListener) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln == nil {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwardListener) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	close(f.ended)
	f.ended = make(chan struct{})
	f.mu.Unlock()
	c.Close()
}

// open returns the number of connections being served and a channel closed
// when one of them ends.
func (f *forwardListener) open() (int, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns), f.ended
}

// WaitForwardIdle waits until every in_forward connection the server has
// accepted has been served to its end, or ctx ends. A client learns that a
// refused handshake is refused when it is answered, not when the server has
// read and counted what it sent; a client without a shared key reads HELO
// and gives up while the server still takes its message for a PING. Once
// the clients have closed their connections, Stats after WaitForwardIdle
// counts everything they sent. A connection still in the listen backlog
// (never accepted) is not waited for.
func (s *Server) WaitForwardIdle(ctx context.Context) error {
	if s.fwd == nil {
		return errors.New("wait for in_forward connections to end: the server has no in_forward endpoint")
	}
	for {
		n, ended := s.fwd.open()
		if n == 0 {
			return nil
		}
		select {
		case <-ended:
		case <-ctx.Done():
			return fmt.Errorf("wait for in_forward connections to end (%d open): %w", n, ctx.Err())
		}
	}
}

// cut closes the listener and every connection (Down, Close).
func (f *forwardListener) cut() {
	f.mu.Lock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
}

// reopen listens again on the same address after cut.
func (s *Server) reopenForward() error {
	ln, err := listenTCP(s.fwd.addr, s.fwd.chosen)
	if err != nil {
		return fmt.Errorf("listen again on %s: %w", s.fwd.addr, err)
	}
	s.serveForwardOn(ln)
	return nil
}

// errCloseConn ends a connection as Fluentd's handler does when it raises.
var errCloseConn = errors.New("close the connection")

// fwdConn is one in_forward connection.
type fwdConn struct {
	s    *Server
	conn net.Conn
	dec  *msgpack.Decoder
}

func (s *Server) serveForwardConn(raw net.Conn) {
	conn := raw
	if s.tls != nil {
		tc := tls.Server(raw, s.tls)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			s.counts.handshakeErrors.Add(1)
			s.log.Debug().Err(err).Msg("in_forward TLS handshake error")
			return
		}
		_ = tc.SetDeadline(time.Time{})
		conn = tc
	}
	s.counts.connections.Add(1)
	c := &fwdConn{s: s, conn: conn, dec: msgpack.NewDecoder(bufio.NewReaderSize(conn, 64<<10))}
	if s.opts.SharedKey != "" {
		if !c.handshake() {
			return
		}
	}
	for {
		v, err := c.readMessage()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug().Err(err).Msg("in_forward connection ended")
			}
			return
		}
		if err := c.handle(v); err != nil {
			return
		}
	}
}

// handshake runs HELO/PING/PONG; false means the connection is done.
func (c *fwdConn) handshake() bool {
	nonce, auth := random16(), random16()
	helo := []any{"HELO", map[string]any{"nonce": nonce, "auth": auth, "keepalive": true}}
	if !c.write(helo) {
		return false
	}
	v, err := c.dec.DecodeInterface()
	if err != nil {
		return false
	}
	salt, ok, reason := c.checkPing(v, nonce, auth)
	if !ok {
		c.s.counts.handshakeRefused.Add(1)
		c.s.log.Warn().Str("reason", reason).Msg("in_forward handshake refused")
		c.write([]any{"PONG", false, reason, "", ""})
		return false
	}
	host := c.s.selfHostname()
	digest := sha512Hex(salt, []byte(host), nonce, []byte(c.s.opts.SharedKey))
	return c.write([]any{"PONG", true, "", host, digest})
}

func (c *fwdConn) checkPing(v any, nonce, auth []byte) (salt []byte, ok bool, reason string) {
	a, isArr := v.([]any)
	if !isArr || len(a) != 6 || str(a[0]) != "PING" {
		return nil, false, "invalid ping message"
	}
	host, salt, digest, user, passDigest := []byte(str(a[1])), []byte(str(a[2])), str(a[3]), str(a[4]), str(a[5])
	if digest != sha512Hex(salt, host, nonce, []byte(c.s.opts.SharedKey)) {
		return nil, false, "shared_key mismatch"
	}
	if len(c.s.opts.Users) > 0 {
		pass, known := c.s.opts.Users[user]
		if !known || passDigest != sha512Hex(auth, []byte(user), []byte(pass)) {
			return nil, false, "username/password mismatch"
		}
	}
	return salt, true, ""
}

func (s *Server) selfHostname() string {
	if s.opts.SelfHostname != "" {
		return s.opts.SelfHostname
	}
	return "fluentd-sim"
}

func (c *fwdConn) write(v any) bool {
	b, err := msgpack.Marshal(v)
	if err != nil {
		c.s.log.Error().Err(err).Msg("encode in_forward answer")
		return false
	}
	_, err = c.conn.Write(b)
	return err == nil
}

// message is one decoded forward message.
type message struct {
	tag     string
	entries []entry
	dropped int
	option  map[string]any
}

type entry struct {
	time   time.Time
	record []byte // JSON, keys in the order sent
}

// readMessage reads the next message; what is not an array is returned as
// nil (ignored, as Fluentd ignores a broken chunk).
func (c *fwdConn) readMessage() (*message, error) {
	code, err := c.dec.PeekCode()
	if err != nil {
		return nil, err
	}
	if !msgpcode.IsFixedArray(code) && code != msgpcode.Array16 && code != msgpcode.Array32 {
		c.s.log.Warn().Msg("in_forward: incoming chunk is broken (not an array)")
		return nil, c.dec.Skip()
	}
	n, err := c.dec.DecodeArrayLen()
	if err != nil {
		return nil, err
	}
	if n < 2 || n > 4 {
		return nil, fmt.Errorf("message is an array of %d", n)
	}
	m := &message{}
	if m.tag, err = c.dec.DecodeString(); err != nil {
		return nil, fmt.Errorf("tag: %w", err)
	}
	code, err = c.dec.PeekCode()
	if err != nil {
		return nil, err
	}
	rest := n - 2
	switch {
	case msgpcode.IsBin(code) || msgpcode.IsString(code):
		err = c.packed(m, n)
		rest = 0
	case msgpcode.IsFixedArray(code) || code == msgpcode.Array16 || code == msgpcode.Array32:
		err = c.forwardEntries(m)
	default:
		var e entry
		var ok bool
		e, ok, err = c.entryFrom(c.dec)
		if ok {
			m.entries = append(m.entries, e)
		} else if err == nil {
			m.dropped++
		}
		rest = n - 3
	}
	if err != nil {
		return nil, err
	}
	if rest == 1 {
		if m.option, err = decodeOption(c.dec); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// packed reads PackedForward's entries and option (to see "compressed").
func (c *fwdConn) packed(m *message, n int) error {
	raw, err := c.dec.DecodeBytes()
	if err != nil {
		return fmt.Errorf("entries: %w", err)
	}
	if n == 3 {
		if m.option, err = decodeOption(c.dec); err != nil {
			return err
		}
	}
	if comp := str(m.option["compressed"]); comp != "" && comp != "text" {
		if comp != "gzip" {
			return fmt.Errorf("compressed %q is not supported", comp)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("gzip entries: %w", err)
		}
		if raw, err = io.ReadAll(io.LimitReader(zr, bodySizeLimit*8)); err != nil {
			return fmt.Errorf("gzip entries: %w", err)
		}
	}
	d := msgpack.NewDecoder(bytes.NewReader(raw))
	for {
		e, ok, err := c.entry(d)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if ok {
			m.entries = append(m.entries, e)
		} else {
			m.dropped++
		}
	}
}

func (c *fwdConn) forwardEntries(m *message) error {
	n, err := c.dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	for range n {
		e, ok, err := c.entry(c.dec)
		if err != nil {
			return err
		}
		if ok {
			m.entries = append(m.entries, e)
		} else {
			m.dropped++
		}
	}
	return nil
}

// entry reads [time, record]; ok is false for an entry Fluentd skips.
func (c *fwdConn) entry(d *msgpack.Decoder) (entry, bool, error) {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return entry{}, false, err
	}
	if n != 2 {
		for range n {
			if err := d.Skip(); err != nil {
				return entry{}, false, err
			}
		}
		return entry{}, false, nil
	}
	return c.entryFrom(d)
}

// entryFrom reads a time and a record.
func (c *fwdConn) entryFrom(d *msgpack.Decoder) (entry, bool, error) {
	t, okTime, err := decodeTime(d)
	if err != nil {
		return entry{}, false, err
	}
	code, err := d.PeekCode()
	if err != nil {
		return entry{}, false, err
	}
	if !msgpcode.IsFixedMap(code) && code != msgpcode.Map16 && code != msgpcode.Map32 {
		return entry{}, false, d.Skip()
	}
	rec, err := appendJSON(nil, d, 0)
	if err != nil {
		return entry{}, false, fmt.Errorf("record: %w", err)
	}
	if !okTime {
		return entry{}, false, nil
	}
	if t.IsZero() {
		t = time.Now()
	}
	return entry{time: t, record: rec}, true, nil
}

// decodeTime reads an integer time or an EventTime; ok is false for other
// values (skipped), and a zero time means "now".
func decodeTime(d *msgpack.Decoder) (t time.Time, ok bool, err error) {
	code, err := d.PeekCode()
	if err != nil {
		return time.Time{}, false, err
	}
	switch {
	case msgpcode.IsExt(code):
		id, n, err := d.DecodeExtHeader()
		if err != nil {
			return time.Time{}, false, err
		}
		b := make([]byte, n)
		if err := d.ReadFull(b); err != nil {
			return time.Time{}, false, err
		}
		if id != 0 || n != 8 {
			return time.Time{}, false, nil
		}
		sec := int64(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		nsec := int64(uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]))
		if sec == 0 {
			return time.Time{}, true, nil
		}
		return time.Unix(sec, nsec).UTC(), true, nil
	case msgpcode.IsFixedNum(code) || (code >= msgpcode.Uint8 && code <= msgpcode.Int64):
		sec, err := d.DecodeInt64()
		if err != nil {
			return time.Time{}, false, err
		}
		if sec == 0 {
			return time.Time{}, true, nil
		}
		return time.Unix(sec, 0).UTC(), true, nil
	case code == msgpcode.Nil:
		return time.Time{}, true, d.Skip()
	default:
		return time.Time{}, false, d.Skip()
	}
}

func decodeOption(d *msgpack.Decoder) (map[string]any, error) {
	v, err := d.DecodeInterface()
	if err != nil {
		return nil, fmt.Errorf("option: %w", err)
	}
	m, _ := v.(map[string]any)
	return m, nil
}

// handle stores a message and answers its chunk; an error closes the
// connection.
func (c *fwdConn) handle(m *message) error {
	if m == nil {
		return nil
	}
	s := c.s
	s.active.Add(1)
	defer s.active.Done()
	s.counts.requests.Add(1)
	f := s.faults.Load()
	if roll(f.DropPercent) {
		s.counts.droppedConns.Add(1)
		return errCloseConn
	}
	if f.EmitFail || roll(f.ErrorPercent) {
		s.counts.errors.Add(1)
		s.log.Warn().Str("tag", m.tag).Msg("in_forward: emit transaction failed (fault); closing the connection")
		return errCloseConn
	}
	recs := make([]parsed, 0, len(m.entries))
	var fields []field
	for _, e := range m.entries {
		fields, _ = scanObject(e.record, 0, fields[:0])
		var uid, sid, ei json.RawMessage
		for _, fl := range fields {
			name := fl.name()
			for _, rule := range f.Poison {
				if string(name) == rule.Field && rawEquals(fl.val, rule.Value) {
					s.counts.errors.Add(1)
					s.log.Warn().Str("tag", m.tag).Str("field", rule.Field).Msg("in_forward: emit failed on a poison record; closing the connection")
					return errCloseConn
				}
			}
			switch string(name) {
			case "uid":
				uid = fl.val
			case "sid":
				sid = fl.val
			case "ei":
				ei = fl.val
			}
		}
		recs = append(recs, parsed{id: recordID(m.tag, uid, sid, ei), time: e.time, size: len(e.record), json: e.record})
	}
	s.counts.dropped.Add(int64(m.dropped))
	switch {
	case len(recs) == 0:
	case !s.match.matches(m.tag):
		s.counts.dropped.Add(int64(len(recs)))
		s.log.Warn().Str("tag", m.tag).Int("records", len(recs)).Msg("no patterns matched")
	default:
		if err := s.store.add(m.tag, recs); err != nil {
			s.log.Error().Err(err).Msg("store records")
			s.counts.errors.Add(1)
			return errCloseConn
		}
	}
	chunk, hasChunk := m.option["chunk"]
	if !hasChunk {
		return nil
	}
	if f.NoAck {
		s.counts.noAcks.Add(1)
		return nil
	}
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
			return errCloseConn
		}
	}
	if !c.write(map[string]any{"ack": chunk}) {
		return errCloseConn
	}
	return nil
}

// appendJSON writes the MessagePack value d holds next as JSON, keeping the
// order of map keys. bin is written as a string (Ruby reads both as String).
func appendJSON(out []byte, d *msgpack.Decoder, depth int) ([]byte, error) {
	if depth > 10000 {
		return nil, errors.New("nested too deeply")
	}
	code, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case code == msgpcode.Nil:
		return append(out, "null"...), d.Skip()
	case code == msgpcode.True || code == msgpcode.False:
		b, err := d.DecodeBool()
		return strconv.AppendBool(out, b), err
	case msgpcode.IsFixedMap(code) || code == msgpcode.Map16 || code == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		out = append(out, '{')
		for i := range n {
			if i > 0 {
				out = append(out, ',')
			}
			k, err := d.DecodeString()
			if err != nil {
				return nil, fmt.Errorf("map key: %w", err)
			}
			out = appendJSONString(out, k)
			out = append(out, ':')
			if out, err = appendJSON(out, d, depth+1); err != nil {
				return nil, err
			}
		}
		return append(out, '}'), nil
	case msgpcode.IsFixedArray(code) || code == msgpcode.Array16 || code == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		out = append(out, '[')
		for i := range n {
			if i > 0 {
				out = append(out, ',')
			}
			if out, err = appendJSON(out, d, depth+1); err != nil {
				return nil, err
			}
		}
		return append(out, ']'), nil
	case msgpcode.IsString(code) || msgpcode.IsBin(code):
		s, err := d.DecodeString()
		return appendJSONString(out, s), err
	case code == msgpcode.Float || code == msgpcode.Double:
		f, err := d.DecodeFloat64()
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(f)
		return append(out, b...), err
	case code == msgpcode.Uint64:
		u, err := d.DecodeUint64()
		return strconv.AppendUint(out, u, 10), err
	case msgpcode.IsFixedNum(code) || (code >= msgpcode.Uint8 && code <= msgpcode.Int64):
		i, err := d.DecodeInt64()
		return strconv.AppendInt(out, i, 10), err
	default:
		return nil, fmt.Errorf("MessagePack code 0x%02x has no JSON form", code)
	}
}

// appendJSONString quotes s as encoding/json does; plain ASCII without
// characters to escape (most of an event) is copied as it is.
func appendJSONString(out []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(out, b...)
		}
	}
	out = append(out, '"')
	out = append(out, s...)
	return append(out, '"')
}

func random16() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return b
}

func sha512Hex(parts ...[]byte) string {
	h := sha512.New()
	for _, p := range parts {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func str(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case []byte:
		return string(s)
	}
	return ""
}
