package fluentd

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

const testSharedKey = "s3cret-shared-key"

// forwardSim starts fluentd-sim's in_forward with TLS from p's CA, the
// shared key and a user, keeping records.
func forwardSim(t *testing.T, p *pki, mod func(*fluentdsim.Options)) *fluentdsim.Server {
	t.Helper()
	srv, err := p.ca.Issue(certs.Request{CommonName: "localhost", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usage: certs.ServerAuth, KeyType: certs.KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	opts := fluentdsim.Options{CAPEM: p.ca.CertPEM, CertPEM: srv.CertPEM, KeyPEM: srv.KeyPEM,
		ForwardAddr: "127.0.0.1:0", SharedKey: testSharedKey, SelfHostname: "aggregator",
		Users: map[string]string{"teleport": "pw1"}, KeepRecords: true}
	if mod != nil {
		mod(&opts)
	}
	s, err := fluentdsim.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// forwardConfig is the client side: p's CA and client certificate, the
// shared key from a file, the sim's user.
func (p *pki) forwardConfig(t *testing.T, url string) config.FluentdConfig {
	t.Helper()
	keyFile := filepath.Join(p.dir, "shared.key")
	write(t, keyFile, []byte(testSharedKey+"\n"))
	return config.FluentdConfig{URL: url, CA: p.caFile, Cert: p.clientCert, Key: p.clientKey,
		SharedKeyFile: keyFile, SelfHostname: "sink-host", Username: "teleport", Password: "pw1",
		ResponseTimeout: 5 * time.Second, DialTimeout: 5 * time.Second}
}

func newForward(t *testing.T, cfg config.FluentdConfig, gz bool) *Forward {
	t.Helper()
	f, err := NewForward(cfg, zerolog.Nop(), gz)
	if err != nil {
		t.Fatalf("NewForward: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

func events(n int, prefix string) []json.RawMessage {
	out := make([]json.RawMessage, n)
	for i := range out {
		out[i] = json.RawMessage(fmt.Sprintf(`{"event":"user.login","uid":"%s-%d","time":"2026-12-01T10:00:%02d.%09dZ","n":%d,"ok":true,"nil":null,"nested":{"a":[1,"x",2.5]}}`,
			prefix, i, i%60, 123456789, i))
	}
	return out
}

// TestForwardMTLSSharedKeyUserAuth: records sent over mTLS after the
// shared-key handshake with user auth arrive whole, once, under their tag.
func TestForwardMTLSSharedKeyUserAuth(t *testing.T) {
	p := newPKI(t)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			sim := forwardSim(t, p, nil)
			f := newForward(t, p.forwardConfig(t, sim.ForwardURL()), gz)
			batch := events(50, "a")
			res, err := f.Send(context.Background(), "test.log", batch)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if res.Status != StatusAcked {
				t.Errorf("status %d, want %d", res.Status, StatusAcked)
			}
			recs := sim.Records("test.log")
			if len(recs) != len(batch) {
				t.Fatalf("stored %d records, want %d", len(recs), len(batch))
			}
			for i, r := range recs {
				var got, want map[string]any
				if err := json.Unmarshal(r.JSON, &got); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(batch[i], &want); err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("record %d: got %v, want %v", i, got, want)
				}
				if wantTime := time.Date(2026, 12, 1, 10, 0, i%60, 0, time.UTC); !r.Time.Equal(wantTime) {
					t.Errorf("record %d time %v, want %v", i, r.Time, wantTime)
				}
			}
			st := sim.Stats()
			if st.DuplicatesTotal != 0 || st.HandshakeRefused != 0 || st.Connections != 1 {
				t.Errorf("stats %s: want no duplicates, no refusal, one connection", st)
			}
		})
	}
}

// TestPackedForwardLayout checks the bytes against the Forward Protocol
// Specification v1: [tag, bin(entries), {size, chunk}], each entry
// [EventTime, record], EventTime = ext 0 of 8 bytes (uint32 seconds, uint32
// nanoseconds, big-endian); with gzip, bin holds the gzipped entries and the
// option says compressed "gzip".
func TestPackedForwardLayout(t *testing.T) {
	recs := []json.RawMessage{
		json.RawMessage(`{"time":"2026-12-01T10:00:01.123456789Z","uid":"x"}`),
		json.RawMessage(`{"uid":"no-time"}`),
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, gz := range []bool{false, true} {
		var e forwardEncoder
		msg, err := e.packedForward("test.log", recs, "Y2h1bmsxMjM0NTY3ODkwMQ==", gz, now)
		if err != nil {
			t.Fatal(err)
		}
		if msg[0] != 0x93 {
			t.Fatalf("first byte 0x%02x, want fixarray 3", msg[0])
		}
		d := msgpack.NewDecoder(bytes.NewReader(msg))
		if n, err := d.DecodeArrayLen(); err != nil || n != 3 {
			t.Fatalf("array len %d, %v", n, err)
		}
		if tag, err := d.DecodeString(); err != nil || tag != "test.log" {
			t.Fatalf("tag %q, %v", tag, err)
		}
		code, _ := d.PeekCode()
		if code != 0xc6 {
			t.Fatalf("entries code 0x%02x, want bin 32", code)
		}
		entries, err := d.DecodeBytes()
		if err != nil {
			t.Fatal(err)
		}
		var opt map[string]any
		if err := d.Decode(&opt); err != nil {
			t.Fatal(err)
		}
		wantOpt := fmt.Sprint(map[string]any{"size": int8(2), "chunk": "Y2h1bmsxMjM0NTY3ODkwMQ=="})
		if gz {
			wantOpt = fmt.Sprint(map[string]any{"size": int8(2), "chunk": "Y2h1bmsxMjM0NTY3ODkwMQ==", "compressed": "gzip"})
			zr, err := gzip.NewReader(bytes.NewReader(entries))
			if err != nil {
				t.Fatal(err)
			}
			if entries, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		if fmt.Sprint(opt) != wantOpt {
			t.Errorf("option %v, want %v", opt, wantOpt)
		}
		ed := msgpack.NewDecoder(bytes.NewReader(entries))
		wantTimes := [][2]uint32{{uint32(time.Date(2026, 12, 1, 10, 0, 1, 0, time.UTC).Unix()), 123456789},
			{uint32(now.Unix()), 6}}
		for i, wt := range wantTimes {
			if n, err := ed.DecodeArrayLen(); err != nil || n != 2 {
				t.Fatalf("entry %d: array len %d, %v", i, n, err)
			}
			id, n, err := ed.DecodeExtHeader()
			if err != nil || id != 0 || n != 8 {
				t.Fatalf("entry %d: ext %d len %d, %v; want EventTime (ext 0, 8 bytes)", i, id, n, err)
			}
			b := make([]byte, 8)
			if err := ed.ReadFull(b); err != nil {
				t.Fatal(err)
			}
			if sec, nsec := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]); sec != wt[0] || nsec != wt[1] {
				t.Errorf("entry %d: time %d.%09d, want %d.%09d", i, sec, nsec, wt[0], wt[1])
			}
			var rec map[string]any
			if err := ed.Decode(&rec); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ed.DecodeArrayLen(); !errors.Is(err, io.EOF) {
			t.Errorf("more entries than records: %v", err)
		}
	}
}

// TestForwardHandshakeRefusals: a wrong shared key, a wrong password, and a
// client without a shared key meeting a server with one, each a clear,
// retryable error; Probe reports the first two at start-up. The server
// refuses each handshake once: two with a wrong secret (the Send and the
// Probe), and the message of the client without a key, taken for an invalid
// PING.
func TestForwardHandshakeRefusals(t *testing.T) {
	p := newPKI(t)
	sim := forwardSim(t, p, nil)
	cases := []struct {
		name     string
		mod      func(*config.FluentdConfig)
		want     string
		refusals int64
	}{
		{"wrong key", func(c *config.FluentdConfig) { c.SharedKeyFile, c.SharedKey = "", "not-the-key" },
			`shared-key handshake failed: the server refused us: "shared_key mismatch"`, 2},
		{"wrong password", func(c *config.FluentdConfig) { c.Password = "wrong" },
			`"username/password mismatch"`, 2},
		{"no shared key", func(c *config.FluentdConfig) { c.SharedKeyFile, c.Username, c.Password = "", "", "" },
			"the server sent HELO: it requires the shared-key handshake", 1},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range cases {
		before := sim.Stats().HandshakeRefused
		t.Run(tc.name, func(t *testing.T) {
			cfg := p.forwardConfig(t, sim.ForwardURL())
			tc.mod(&cfg)
			f := newForward(t, cfg, false)
			_, err := f.Send(context.Background(), "test.log", events(3, tc.name))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Send: %v, want %q", err, tc.want)
			}
			if Refused(err) || !Retryable(err) {
				t.Errorf("Send error refused=%v retryable=%v, want a retryable error", Refused(err), Retryable(err))
			}
			var he *HandshakeError
			if !errors.As(err, &he) {
				t.Errorf("error %T is not a HandshakeError", err)
			}
			if tc.name != "no shared key" {
				if perr := f.Probe(context.Background()); perr == nil || !strings.Contains(perr.Error(), tc.want) {
					t.Errorf("Probe: %v, want %q", perr, tc.want)
				}
			}
		})
		// The client without a key gives up on reading HELO, before the
		// server has read its message: count once the server is done with
		// every connection (the refused ones are closed by the client).
		if err := sim.WaitForwardIdle(ctx); err != nil {
			t.Fatal(err)
		}
		if n := sim.Stats().HandshakeRefused - before; n != tc.refusals {
			t.Errorf("%s: handshake refusals %d, want %d", tc.name, n, tc.refusals)
		}
	}
	if n := sim.Stats().StoredTotal; n != 0 {
		t.Errorf("stored %d records from refused clients", n)
	}
	if n := sim.Stats().HandshakeRefused; n != 5 {
		t.Errorf("handshake refusals %d, want 5", n)
	}
}

// TestForwardTLSRefusals: Fluentd's certificate from another CA, and no
// client certificate, are explained.
func TestForwardTLSRefusals(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	sim := forwardSim(t, p, nil)

	cfg := p.forwardConfig(t, sim.ForwardURL())
	cfg.CA = other.caFile
	_, err := newForward(t, cfg, false).Send(context.Background(), "test.log", events(1, "ca"))
	if err == nil || !strings.Contains(err.Error(), "not signed by ca "+other.caFile) {
		t.Errorf("wrong CA: %v", err)
	}

	cfg = p.forwardConfig(t, sim.ForwardURL())
	cfg.Cert, cfg.Key = "", ""
	_, err = newForward(t, cfg, false).Send(context.Background(), "test.log", events(1, "nocert"))
	if err == nil || !strings.Contains(err.Error(), "Fluentd refused our client certificate") {
		t.Errorf("no client certificate: %v", err)
	}
	if !Retryable(err) {
		t.Errorf("no client certificate: %v is not retryable", err)
	}
	if n := sim.Stats().StoredTotal; n != 0 {
		t.Errorf("stored %d records", n)
	}
}

// TestForwardLostAckIsRetryable: with acks lost, Send fails after the
// response timeout (the records were stored: a resend makes duplicates,
// never a loss) and the next Send on a healthy server succeeds.
func TestForwardLostAckIsRetryable(t *testing.T) {
	p := newPKI(t)
	sim := forwardSim(t, p, func(o *fluentdsim.Options) { o.Faults.NoAck = true })
	cfg := p.forwardConfig(t, sim.ForwardURL())
	cfg.ResponseTimeout = 300 * time.Millisecond
	f := newForward(t, cfg, false)
	_, err := f.Send(context.Background(), "test.log", events(5, "lost"))
	if err == nil || !strings.Contains(err.Error(), "no ack within 300ms") || !Retryable(err) {
		t.Fatalf("Send: %v, want a retryable missing ack", err)
	}
	// The client gave up on its clock, not on the server's: the message is
	// stored, and left unacknowledged, once the server is done with the
	// connection the client closed, and only then are the faults cleared.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sim.WaitForwardIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sim.SetFaults(fluentdsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Send(context.Background(), "test.log", events(5, "lost")); err != nil {
		t.Fatalf("resend: %v", err)
	}
	st := sim.Stats()
	if st.StoredTotal != 10 || st.DuplicatesTotal != 5 || st.NoAcks != 1 {
		t.Errorf("stats %s: want 10 stored, 5 duplicates, 1 unacknowledged message", st)
	}
}

// TestForwardEmitFailureAndDrops: a server that closes the connection
// instead of acknowledging (emit failed, dropped connection) gives a
// retryable error naming it; nothing is reported sent.
func TestForwardEmitFailureAndDrops(t *testing.T) {
	p := newPKI(t)
	for _, fault := range []fluentdsim.Faults{{EmitFail: true}, {DropPercent: 100}} {
		sim := forwardSim(t, p, func(o *fluentdsim.Options) { o.Faults = fault })
		f := newForward(t, p.forwardConfig(t, sim.ForwardURL()), false)
		res, err := f.Send(context.Background(), "test.log", events(4, "x"))
		if err == nil || !strings.Contains(err.Error(), "closed the connection before acknowledging") || !Retryable(err) {
			t.Errorf("fault %+v: Send: %v", fault, err)
		}
		if res.Status != 0 {
			t.Errorf("fault %+v: status %d, want 0", fault, res.Status)
		}
	}
}

// TestForwardReusesConnections: sequential and concurrent sends share at
// most MaxConns kept-alive connections, each message acked.
func TestForwardReusesConnections(t *testing.T) {
	p := newPKI(t)
	sim := forwardSim(t, p, nil)
	cfg := p.forwardConfig(t, sim.ForwardURL())
	cfg.MaxConns = 3
	f := newForward(t, cfg, false)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				if _, err := f.Send(context.Background(), "test.log", events(10, fmt.Sprintf("g%d-%d", g, i))); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := sim.Stats()
	if st.StoredTotal != 400 || st.DuplicatesTotal != 0 {
		t.Errorf("stats %s: want 400 stored, no duplicates", st)
	}
	if st.Connections > 3 || st.Requests != 40 {
		t.Errorf("connections %d (want ≤ 3), messages %d (want 40)", st.Connections, st.Requests)
	}
}

// TestForwardStaleConnectionRetried: after Fluentd restarts, the kept-alive
// connection is dead; the next Send goes out on a new one without an error.
func TestForwardStaleConnectionRetried(t *testing.T) {
	p := newPKI(t)
	sim := forwardSim(t, p, nil)
	f := newForward(t, p.forwardConfig(t, sim.ForwardURL()), false)
	if _, err := f.Send(context.Background(), "test.log", events(2, "before")); err != nil {
		t.Fatal(err)
	}
	sim.Down(0)
	if err := sim.Up(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Send(context.Background(), "test.log", events(2, "after")); err != nil {
		t.Fatalf("Send after restart: %v", err)
	}
	if st := sim.Stats(); st.StoredTotal != 4 || st.Connections != 2 {
		t.Errorf("stats %s: want 4 stored over 2 connections", st)
	}
}

// TestForwardRefusesRecordsItCannotSend: a record that is not a JSON object
// or has a `time` that is not a time is refused before anything is sent
// (in_forward would drop it silently), so the sink can dead-letter it.
func TestForwardRefusesRecordsItCannotSend(t *testing.T) {
	p := newPKI(t)
	sim := forwardSim(t, p, nil)
	f := newForward(t, p.forwardConfig(t, sim.ForwardURL()), false)
	for _, bad := range []string{`[1,2]`, `{"a":`, `{"time":12}`, `{"time":"yesterday"}`} {
		batch := append(events(2, "ok"), json.RawMessage(bad))
		res, err := f.Send(context.Background(), "test.log", batch)
		if !Refused(err) {
			t.Errorf("%s: %v, want a refusal", bad, err)
			continue
		}
		if !strings.Contains(res.Answer, "event 3 of 3") || !strings.Contains(err.Error(), "event 3 of 3") {
			t.Errorf("%s: answer %q, error %v: want the event named", bad, res.Answer, err)
		}
	}
	if st := sim.Stats(); st.Requests != 0 {
		t.Errorf("%d messages reached the server", st.Requests)
	}
}

// TestForwardURLs: tcp:// needs insecure-tcp, other schemes are refused.
func TestForwardURLs(t *testing.T) {
	_, err := NewForward(config.FluentdConfig{URL: "tcp://127.0.0.1:24224"}, zerolog.Nop(), false)
	if err == nil || !strings.Contains(err.Error(), "plain tcp: refused unless --insecure-tcp") {
		t.Errorf("tcp: %v", err)
	}
	if _, err := NewForward(config.FluentdConfig{URL: "tcp://127.0.0.1:24224", InsecureTCP: true}, zerolog.Nop(), false); err != nil {
		t.Errorf("tcp with insecure-tcp: %v", err)
	}
	_, err = NewForward(config.FluentdConfig{URL: "udp://127.0.0.1:24224"}, zerolog.Nop(), false)
	if err == nil || !strings.Contains(err.Error(), "scheme must be tls") {
		t.Errorf("udp: %v", err)
	}
	tags, err := ForwardTags(config.FluentdConfig{URL: "tls://h:24224/test.log", SessionURL: "tls://h:24224/session"})
	if err != nil || tags.Audit != "test.log" || tags.Session("abc") != "session.abc.log" {
		t.Errorf("tags %+v, %v", tags, err)
	}
}

// fakeServer accepts one plain-TCP connection and runs serve on it.
func fakeServer(t *testing.T, serve func(c net.Conn, d *msgpack.Decoder)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c, msgpack.NewDecoder(bufio.NewReader(c)))
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return "tcp://" + ln.Addr().String()
}

func writeMsgpack(t *testing.T, c net.Conn, v any) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := c.Write(b); err != nil {
		t.Error(err)
	}
}

// TestForwardBadAnswers: an answer that is not the ack of our chunk, a
// connection closed in the middle of the message, and a PONG whose digest
// does not prove the server knows the key are each a clear error.
func TestForwardBadAnswers(t *testing.T) {
	plain := func(url string) config.FluentdConfig {
		return config.FluentdConfig{URL: url, InsecureTCP: true, SelfHostname: "sink", ResponseTimeout: 5 * time.Second}
	}
	t.Run("wrong ack", func(t *testing.T) {
		url := fakeServer(t, func(c net.Conn, d *msgpack.Decoder) {
			var msg []any
			if err := d.Decode(&msg); err != nil {
				t.Error(err)
				return
			}
			writeMsgpack(t, c, map[string]any{"ack": "someone-else"})
		})
		_, err := newForward(t, plain(url), false).Send(context.Background(), "t", events(1, "w"))
		if err == nil || !strings.Contains(err.Error(), `instead of the ack of our chunk`) {
			t.Errorf("Send: %v", err)
		}
	})
	t.Run("closed mid-message", func(t *testing.T) {
		url := fakeServer(t, func(c net.Conn, d *msgpack.Decoder) {
			b := make([]byte, 10)
			_, _ = io.ReadFull(c, b) // the start of the message only
		})
		_, err := newForward(t, plain(url), false).Send(context.Background(), "t", events(200, "m"))
		if err == nil || !Retryable(err) || !(strings.Contains(err.Error(), "closed the connection before acknowledging") ||
			strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")) {
			t.Errorf("Send: %v", err)
		}
	})
	t.Run("forged PONG", func(t *testing.T) {
		url := fakeServer(t, func(c net.Conn, d *msgpack.Decoder) {
			writeMsgpack(t, c, []any{"HELO", map[string]any{"nonce": []byte("0123456789abcdef"), "auth": "", "keepalive": true}})
			var ping []any
			if err := d.Decode(&ping); err != nil {
				t.Error(err)
				return
			}
			if len(ping) != 6 || ping[0] != "PING" || ping[1] != "sink" || ping[4] != "" || ping[5] != "" {
				t.Errorf("PING %v", ping)
			}
			writeMsgpack(t, c, []any{"PONG", true, "", "impostor", strings.Repeat("0", 128)})
		})
		cfg := plain(url)
		cfg.SharedKey = testSharedKey
		err := newForward(t, cfg, false).Probe(context.Background())
		if err == nil || !strings.Contains(err.Error(), "PONG digest does not match our shared key") {
			t.Errorf("Probe: %v", err)
		}
	})
}
