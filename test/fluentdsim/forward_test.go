package fluentdsim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

// A hand-written in_forward client for the table: it speaks the protocol
// from the specification with vmihailenco/msgpack, independently of the
// sink's client.

type fwdClient struct {
	t    *testing.T
	conn net.Conn
	dec  *msgpack.Decoder
}

func dialForward(t *testing.T, s *Server, pair *certs.Pair) (*fwdClient, error) {
	t.Helper()
	p := getPKI(t)
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, ServerName: "127.0.0.1"}
	if pair != nil {
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{pair.Cert.Raw}, PrivateKey: pair.Key, Leaf: pair.Cert}}
	}
	conn, err := tls.Dial("tcp", s.ForwardAddr(), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &fwdClient{t: t, conn: conn, dec: msgpack.NewDecoder(bufio.NewReader(conn))}, nil
}

func (c *fwdClient) send(v any) {
	c.t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *fwdClient) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *fwdClient) read() (any, error) { return c.dec.DecodeInterface() }

// handshake answers HELO with a PING for key/user/password and returns the
// PONG.
func (c *fwdClient) handshake(key, user, password string) []any {
	c.t.Helper()
	v, err := c.read()
	if err != nil {
		c.t.Fatalf("read HELO: %v", err)
	}
	helo, _ := v.([]any)
	if len(helo) != 2 || helo[0] != "HELO" {
		c.t.Fatalf("HELO: got %#v", v)
	}
	opts := helo[1].(map[string]any)
	nonce, auth := opts["nonce"].([]byte), opts["auth"].([]byte)
	if len(nonce) != 16 || len(auth) != 16 || opts["keepalive"] != true {
		c.t.Fatalf("HELO options %#v: want 16-byte nonce and auth, keepalive true", opts)
	}
	salt := "0123456789abcdef0123456789abcdef"
	c.send([]any{"PING", "client-host", salt, sha512Hex([]byte(salt), []byte("client-host"), nonce, []byte(key)),
		user, sha512Hex(auth, []byte(user), []byte(password))})
	v, err = c.read()
	if err != nil {
		c.t.Fatalf("read PONG: %v", err)
	}
	pong, _ := v.([]any)
	if len(pong) != 5 || pong[0] != "PONG" {
		c.t.Fatalf("PONG: got %#v", v)
	}
	if pong[1] == true {
		want := sha512Hex([]byte(salt), []byte(pong[3].(string)), nonce, []byte(key))
		if pong[4] != want {
			c.t.Errorf("PONG digest %v, want sha512_hex(salt+hostname+nonce+key) %s", pong[4], want)
		}
	}
	return pong
}

// closed reports whether the server closed the connection (EOF next).
func (c *fwdClient) closed() bool {
	_, err := c.read()
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func eventTime(sec, nsec uint32) *msgpack.RawMessage {
	b := []byte{0xd7, 0x00, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], sec)
	binary.BigEndian.PutUint32(b[6:], nsec)
	raw := msgpack.RawMessage(b)
	return &raw
}

func packEntries(t *testing.T, entries ...[]any) []byte {
	var buf bytes.Buffer
	for _, e := range entries {
		b, err := msgpack.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	return buf.Bytes()
}

func gzipped(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestForwardBehaviour is Fluentd's in_forward as the sim must reproduce it
// (in_forward.rb, Forward Protocol Specification v1): what each message
// gets as an answer and what is stored.
func TestForwardBehaviour(t *testing.T) {
	t0 := uint32(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).Unix())
	rec := func(uid string) map[string]any { return map[string]any{"uid": uid, "n": 1} }
	tests := []struct {
		name     string
		msg      func(t *testing.T) any
		ack      bool // an {"ack": chunk} answer
		stored   int
		dropped  int64
		wantTime time.Time
	}{
		{"Message mode with chunk", func(*testing.T) any {
			return []any{"test.log", eventTime(t0, 5), rec("m1"), map[string]any{"chunk": "c1"}}
		}, true, 1, 0, time.Unix(int64(t0), 0)},
		{"Message mode, integer time, no option: no answer", func(*testing.T) any {
			return []any{"test.log", t0, rec("m2")}
		}, false, 1, 0, time.Unix(int64(t0), 0)},
		{"Forward mode", func(*testing.T) any {
			return []any{"test.log", []any{[]any{eventTime(t0, 0), rec("f1")}, []any{t0 + 1, rec("f2")}}, map[string]any{"chunk": "c1"}}
		}, true, 2, 0, time.Unix(int64(t0), 0)},
		{"PackedForward as bin", func(t *testing.T) any {
			return []any{"test.log", packEntries(t, []any{eventTime(t0, 0), rec("p1")}, []any{eventTime(t0, 0), rec("p2")}), map[string]any{"chunk": "c1", "size": 2}}
		}, true, 2, 0, time.Unix(int64(t0), 0)},
		{"PackedForward as str (out_forward's str32)", func(t *testing.T) any {
			return []any{"test.log", string(packEntries(t, []any{eventTime(t0, 0), rec("s1")})), map[string]any{"chunk": "c1"}}
		}, true, 1, 0, time.Unix(int64(t0), 0)},
		{"CompressedPackedForward gzip", func(t *testing.T) any {
			return []any{"test.log", gzipped(t, packEntries(t, []any{eventTime(t0, 0), rec("g1")}, []any{eventTime(t0, 0), rec("g2")})),
				map[string]any{"chunk": "c1", "compressed": "gzip", "size": 2}}
		}, true, 2, 0, time.Unix(int64(t0), 0)},
		{"invalid entries skipped, still acked (skip_invalid_event)", func(*testing.T) any {
			return []any{"test.log", []any{[]any{"not a time", rec("x1")}, []any{t0, "not a map"}, []any{t0, rec("ok")}}, map[string]any{"chunk": "c1"}}
		}, true, 1, 2, time.Unix(int64(t0), 0)},
		{"zero time stamped now", func(*testing.T) any {
			return []any{"test.log", []any{[]any{0, rec("z1")}}, map[string]any{"chunk": "c1"}}
		}, true, 1, 0, time.Time{}},
	}
	s := startServer(t, Options{ForwardAddr: "127.0.0.1:0", SharedKey: "k", KeepRecords: true})
	p := getPKI(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Reset()
			c, err := dialForward(t, s, p.client)
			if err != nil {
				t.Fatal(err)
			}
			if pong := c.handshake("k", "", ""); pong[1] != true {
				t.Fatalf("handshake refused: %v", pong)
			}
			start := time.Now().Add(-time.Second)
			c.send(tt.msg(t))
			if tt.ack {
				v, err := c.read()
				if err != nil || fmt.Sprint(v) != fmt.Sprint(map[string]any{"ack": "c1"}) {
					t.Fatalf("answer %#v, %v; want {ack: c1}", v, err)
				}
			} else {
				// A message with a chunk after it proves nothing was sent for
				// the first: the next answer is the second's ack.
				c.send([]any{"other.tag", t0, rec("probe"), map[string]any{"chunk": "c2"}})
				v, err := c.read()
				if err != nil || fmt.Sprint(v) != fmt.Sprint(map[string]any{"ack": "c2"}) {
					t.Fatalf("answer %#v, %v; want only the probe's ack", v, err)
				}
			}
			recs := s.Records("test.log")
			if len(recs) != tt.stored {
				t.Fatalf("stored %d, want %d", len(recs), tt.stored)
			}
			if got := s.Stats().Dropped; got != tt.dropped {
				t.Errorf("dropped %d, want %d", got, tt.dropped)
			}
			if tt.wantTime.IsZero() {
				if recs[0].Time.Before(start.Truncate(time.Second)) {
					t.Errorf("time %v, want about now", recs[0].Time)
				}
			} else if !recs[0].Time.Equal(tt.wantTime) {
				t.Errorf("time %v, want %v", recs[0].Time, tt.wantTime)
			}
			if !strings.Contains(string(recs[0].JSON), `"uid":`) {
				t.Errorf("record JSON %s", recs[0].JSON)
			}
		})
	}
}

// TestForwardHandshakeTable: what in_forward answers to each PING.
func TestForwardHandshakeTable(t *testing.T) {
	s := startServer(t, Options{ForwardAddr: "127.0.0.1:0", SharedKey: "k", SelfHostname: "agg", Users: map[string]string{"u": "pw"}})
	p := getPKI(t)
	tests := []struct {
		name, key, user, pass string
		ok                    bool
		reason                string
	}{
		{"right key and user", "k", "u", "pw", true, ""},
		{"wrong key", "x", "u", "pw", false, "shared_key mismatch"},
		{"wrong password", "k", "u", "nope", false, "username/password mismatch"},
		{"unknown user", "k", "who", "pw", false, "username/password mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialForward(t, s, p.client)
			if err != nil {
				t.Fatal(err)
			}
			pong := c.handshake(tt.key, tt.user, tt.pass)
			if pong[1] != tt.ok || pong[2] != tt.reason {
				t.Fatalf("PONG %v, want ok=%v reason %q", pong, tt.ok, tt.reason)
			}
			if tt.ok {
				if pong[3] != "agg" {
					t.Errorf("server hostname %v, want agg", pong[3])
				}
				return
			}
			if pong[3] != "" || pong[4] != "" {
				t.Errorf("refusing PONG %v: want empty hostname and digest", pong)
			}
			if !c.closed() {
				t.Error("connection still open after a refused handshake")
			}
		})
	}
	t.Run("not a PING", func(t *testing.T) {
		c, err := dialForward(t, s, p.client)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.read(); err != nil { // HELO
			t.Fatal(err)
		}
		c.send([]any{"test.log", 1, map[string]any{"a": 1}})
		v, err := c.read()
		if err != nil || fmt.Sprint(v) != fmt.Sprint([]any{"PONG", false, "invalid ping message", "", ""}) {
			t.Fatalf("answer %#v, %v", v, err)
		}
	})
	if st := s.Stats(); st.HandshakeRefused != 4 || st.StoredTotal != 0 {
		t.Errorf("stats %s: want 4 refusals, nothing stored", st)
	}
}

// TestWaitForwardIdle: a client that sends something other than a PING and
// closes at once, without waiting for the answer, is counted as refused
// once WaitForwardIdle returns; while a connection is open it waits, and
// says how many are open when its context ends.
func TestWaitForwardIdle(t *testing.T) {
	s := startServer(t, Options{ForwardAddr: "127.0.0.1:0", SharedKey: "k"})
	p := getPKI(t)
	c, err := dialForward(t, s, p.client)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.read(); err != nil { // HELO: the server serves this connection
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.WaitForwardIdle(done); err == nil || !strings.Contains(err.Error(), "(1 open)") {
		t.Errorf("WaitForwardIdle with a connection open: %v, want it still waiting on 1", err)
	}
	c.send([]any{"test.log", 1, map[string]any{"a": 1}})
	if err := c.conn.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	if err := s.WaitForwardIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.HandshakeRefused != 1 || st.StoredTotal != 0 {
		t.Errorf("stats %s: want 1 refusal, nothing stored", st)
	}
	httpOnly := startServer(t, Options{})
	if err := httpOnly.WaitForwardIdle(ctx); err == nil || !strings.Contains(err.Error(), "no in_forward endpoint") {
		t.Errorf("WaitForwardIdle without in_forward: %v", err)
	}
}

// TestForwardTLSAndFaults: client certificates are required; the fault
// switches act on forward messages as described in forward.go.
func TestForwardTLSAndFaults(t *testing.T) {
	s := startServer(t, Options{ForwardAddr: "127.0.0.1:0"})
	p := getPKI(t)
	for _, pair := range []*certs.Pair{nil, p.other} {
		c, err := dialForward(t, s, pair)
		if err == nil {
			c.send([]any{"test.log", 1, map[string]any{"a": 1}, map[string]any{"chunk": "c"}})
			_, err = c.read()
		}
		if err == nil {
			t.Errorf("client certificate %v: accepted", pair != nil)
		}
	}
	if n := s.Stats().HandshakeErrors; n != 2 {
		t.Errorf("handshake errors %d, want 2", n)
	}
	msg := []any{"test.log", []any{[]any{1, map[string]any{"uid": "a"}}}, map[string]any{"chunk": "c"}}
	for _, tt := range []struct {
		name   string
		f      Faults
		stored int64
	}{
		{"emit fail", Faults{EmitFail: true}, 0},
		{"drop", Faults{DropPercent: 100}, 0},
		{"poison", Faults{Poison: []Poison{{Field: "uid", Value: "a"}}}, 0},
		{"no ack", Faults{NoAck: true}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s.Reset()
			if err := s.SetFaults(tt.f); err != nil {
				t.Fatal(err)
			}
			c, err := dialForward(t, s, p.client)
			if err != nil {
				t.Fatal(err)
			}
			c.send(msg)
			if tt.f.NoAck {
				_ = c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if v, err := c.read(); err == nil {
					t.Errorf("answer %v with NoAck", v)
				}
			} else if !c.closed() {
				t.Error("connection not closed")
			}
			if n := s.Stats().StoredTotal; n != tt.stored {
				t.Errorf("stored %d, want %d", n, tt.stored)
			}
		})
	}
	if err := s.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	// Duplicates by uid, and Down cuts connections.
	s.Reset()
	c, err := dialForward(t, s, p.client)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c.send(msg)
		if _, err := c.read(); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.StoredTotal != 2 || st.DuplicatesTotal != 1 {
		t.Errorf("stats %s: want 2 stored, 1 duplicate", st)
	}
	s.Down(0)
	if !c.closed() {
		t.Error("Down left the connection open")
	}
	if _, err := net.DialTimeout("tcp", s.ForwardAddr(), time.Second); err == nil {
		t.Error("in_forward accepts connections while down")
	}
	if err := s.Up(); err != nil {
		t.Fatal(err)
	}
	if _, err := dialForward(t, s, p.client); err != nil {
		t.Errorf("after Up: %v", err)
	}
}
