package fluentdsim

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

func TestClientCertificateRequired(t *testing.T) {
	p := getPKI(t)
	s := startServer(t, Options{})

	if r := mustPost(t, newClient(t, p.client), s, "test.log", `{"uid":"1"}`); r.code != 200 {
		t.Fatalf("with a client certificate: status %d, want 200", r.code)
	}
	if _, err := post(t, newClient(t, nil), s, "test.log", []byte(`{"uid":"2"}`)); err == nil {
		t.Error("without a client certificate: request succeeded, want a TLS handshake error")
	} else if !strings.Contains(err.Error(), "tls") {
		t.Errorf("without a client certificate: error %q, want a TLS error", err)
	}
	if _, err := post(t, newClient(t, p.other), s, "test.log", []byte(`{"uid":"3"}`)); err == nil {
		t.Error("with a certificate from another CA: request succeeded, want a TLS handshake error")
	} else if !strings.Contains(err.Error(), "tls") {
		t.Errorf("with a certificate from another CA: error %q, want a TLS error", err)
	}
	// TLS 1.1 is refused too.
	c := newClient(t, p.client)
	tr := c.Transport.(*http.Transport)
	tr.TLSClientConfig.MinVersion, tr.TLSClientConfig.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := post(t, c, s, "test.log", []byte(`{"uid":"4"}`)); err == nil {
		t.Error("TLS 1.1: request succeeded, want a handshake error")
	}

	eventually(t, "3 handshake errors counted", func() bool { return s.Stats().HandshakeErrors == 3 })
	if ids := s.IDs(); len(ids) != 1 || ids["1"] != 1 {
		t.Errorf("stored ids = %v, want only the authenticated client's", ids)
	}
}

// writeTLSFiles writes the CA, the server certificate and the server key
// encrypted with pass (as `configure` does) into dir.
func writeTLSFiles(t *testing.T, dir, pass string) (ca, cert, key string) {
	t.Helper()
	p := getPKI(t)
	enc, err := certs.EncryptKeyPEM(p.server.Key, []byte(pass))
	if err != nil {
		t.Fatalf("encrypt key: %v", err)
	}
	ca, cert, key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	for f, data := range map[string][]byte{ca: p.ca.CertPEM, cert: p.server.CertPEM, key: enc} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

func TestEncryptedKeyFiles(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTLSFiles(t, dir, "s3cret pass")
	s := startServer(t, Options{CAFile: ca, CertFile: cert, KeyFile: key, KeyPassphrase: "s3cret pass"})
	if r := mustPost(t, newClient(t, getPKI(t).client), s, "test.log", `{"uid":"1"}`); r.code != 200 {
		t.Fatalf("status %d, want 200", r.code)
	}

	bad := []struct {
		name string
		opts Options
		want string
	}{
		{"wrong passphrase", Options{CAFile: ca, CertFile: cert, KeyFile: key, KeyPassphrase: "nope"}, "passphrase"},
		{"no passphrase", Options{CAFile: ca, CertFile: cert, KeyFile: key}, "passphrase"},
		{"missing CA file", Options{CAFile: filepath.Join(dir, "missing.crt"), CertFile: cert, KeyFile: key}, "missing.crt"},
		{"key without cert", Options{CAFile: ca, KeyFile: key}, "set both CertFile and KeyFile"},
		{"no TLS material", Options{}, "no CA"},
		{"CA file is not PEM", Options{CAFile: key + ".txt", CertFile: cert, KeyFile: key, KeyPassphrase: "s3cret pass"}, "not PEM"},
	}
	if err := os.WriteFile(key+".txt", []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			s, err := Start(context.Background(), b.opts)
			if err == nil {
				s.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), b.want) {
				t.Errorf("error %q, want it to mention %q", err, b.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "nope") {
				t.Errorf("error %q shows the passphrase", err)
			}
		})
	}
}

func TestPortInUse(t *testing.T) {
	s := startServer(t, Options{})
	p := getPKI(t)
	_, err := Start(context.Background(), Options{Addr: s.Addr(), CAPEM: p.ca.CertPEM, CertPEM: p.server.CertPEM, KeyPEM: p.server.KeyPEM})
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), s.Addr()) {
		t.Errorf("second server on %s: error %v, want address already in use", s.Addr(), err)
	}
}

func TestKeepAlive(t *testing.T) {
	s := startServer(t, Options{})
	c := newClient(t, getPKI(t).client)
	for i := range 50 {
		if r := mustPost(t, c, s, "test.log", `{"uid":"k`+string(rune('a'+i%26))+`"}`); r.code != 200 {
			t.Fatalf("request %d: status %d", i, r.code)
		}
	}
	st := s.Stats()
	if st.Requests != 50 || st.Connections != 1 {
		t.Errorf("requests=%d connections=%d, want 50 requests on 1 connection", st.Requests, st.Connections)
	}
}

func TestErrorPercent(t *testing.T) {
	s := startServer(t, Options{Faults: Faults{ErrorPercent: 100}})
	c := newClient(t, getPKI(t).client)
	for range 5 {
		if r := mustPost(t, c, s, "test.log", `{"uid":"1"}`); r.code != 500 {
			t.Fatalf("at 100%%: status %d, want 500", r.code)
		}
	}
	if err := s.SetFaults(Faults{ErrorPercent: 50}); err != nil {
		t.Fatal(err)
	}
	const n = 400
	fails := 0
	for range n {
		r := mustPost(t, c, s, "test.log", `{"uid":"2"}`)
		if r.code == 500 {
			fails++
		}
	}
	// Binomial(400, 0.5): the standard deviation is 10; ±60 never fails in practice.
	if fails < 140 || fails > 260 {
		t.Errorf("at 50%%: %d of %d failed", fails, n)
	}
	st := s.Stats()
	if st.Errors != int64(5+fails) || st.StoredTotal != int64(n-fails) {
		t.Errorf("errors=%d stored=%d, want %d and %d", st.Errors, st.StoredTotal, 5+fails, n-fails)
	}
	if err := s.SetFaults(Faults{ErrorPercent: 101}); err == nil {
		t.Error("SetFaults accepted 101%")
	}
}

func TestDroppedConnection(t *testing.T) {
	s := startServer(t, Options{Faults: Faults{DropPercent: 100}})
	c := newClient(t, getPKI(t).client)
	// POST is not retried by net/http on a dropped connection, so each one fails.
	for range 3 {
		if _, err := post(t, c, s, "test.log", []byte(`{"uid":"1"}`)); err == nil {
			t.Fatal("request answered, want the connection dropped")
		}
	}
	st := s.Stats()
	if st.DroppedConnections != 3 || st.StoredTotal != 0 {
		t.Errorf("dropped_connections=%d stored=%d, want 3 and 0", st.DroppedConnections, st.StoredTotal)
	}
}

func TestLatencyStoresBeforeAnswering(t *testing.T) {
	const latency = 1500 * time.Millisecond
	s := startServer(t, Options{Faults: Faults{Latency: latency}})
	c := newClient(t, getPKI(t).client)
	start := time.Now()
	if r := mustPost(t, c, s, "test.log", `{"uid":"slow"}`); r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	if d := time.Since(start); d < latency {
		t.Errorf("answered after %v, want ≥ %v", d, latency)
	}
	// A client that gives up before the answer has still delivered the
	// record. Its timeout leaves ample time to send the request on a busy
	// machine, and the store is awaited: the server may be slow too.
	c.Timeout = latency / 3
	if _, err := post(t, c, s, "test.log", []byte(`{"uid":"timeout"}`)); err == nil {
		t.Fatalf("request with a %v timeout succeeded", c.Timeout)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.IDs()["timeout"] != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.IDs()["timeout"] != 1 {
		t.Errorf("record of the timed-out request not stored: %v", s.IDs())
	}
}

func TestDownThenUpOnSamePort(t *testing.T) {
	s := startServer(t, Options{})
	c := newClient(t, getPKI(t).client)
	addr := s.Addr()
	if r := mustPost(t, c, s, "test.log", `{"uid":"before"}`); r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	s.Down(0)
	if !s.IsDown() {
		t.Fatal("IsDown false after Down")
	}
	// The cut keep-alive connection would answer EOF; a new one is refused.
	c.CloseIdleConnections()
	_, err := post(t, c, s, "test.log", []byte(`{"uid":"during"}`))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("while down: error %v, want connection refused", err)
	}
	if err := s.Up(); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if s.Addr() != addr {
		t.Errorf("address changed from %s to %s", addr, s.Addr())
	}
	if r := mustPost(t, c, s, "test.log", `{"uid":"after"}`); r.code != 200 {
		t.Fatalf("after Up: status %d", r.code)
	}

	// A timed down period ends by itself.
	s.Down(200 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("dial succeeded while down")
	}
	eventually(t, "the server to come back", func() bool { return !s.IsDown() })
	if r := mustPost(t, c, s, "test.log", `{"uid":"back"}`); r.code != 200 {
		t.Fatalf("after the down period: status %d", r.code)
	}
	ids := s.IDs()
	if len(ids) != 3 || ids["during"] != 0 {
		t.Errorf("ids = %v, want before, after, back", ids)
	}
}

// TestDownHoldsChosenPorts: while the server is down, the ports the kernel
// chose for it stay its own: connections are refused, no other socket can
// listen there (on a busy machine, another program's could otherwise take
// the port and Up would fail), and Up serves on them again. A port given in
// the configuration is not shared: a second server on it fails to start.
func TestDownHoldsChosenPorts(t *testing.T) {
	s := startServer(t, Options{ForwardAddr: "127.0.0.1:0"})
	p := getPKI(t)
	for round := range 2 {
		s.Down(0)
		for _, addr := range []string{s.Addr(), s.ForwardAddr()} {
			if c, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
				if err == nil {
					c.Close()
				}
				t.Errorf("round %d: dial %s while down: %v, want connection refused", round, addr, err)
			}
			ln, err := net.Listen("tcp", addr)
			if err == nil {
				ln.Close()
				t.Errorf("round %d: another listener took %s while the server was down", round, addr)
			} else if !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("round %d: listen on %s while down: %v, want address already in use", round, addr, err)
			}
		}
		if err := s.Up(); err != nil {
			t.Fatalf("round %d: Up: %v", round, err)
		}
		c := newClient(t, p.client)
		if r := mustPost(t, c, s, "test.log", fmt.Sprintf(`{"uid":"http-%d"}`, round)); r.code != 200 {
			t.Fatalf("round %d: after Up: status %d", round, r.code)
		}
		fc, err := dialForward(t, s, p.client)
		if err != nil {
			t.Fatalf("round %d: in_forward after Up: %v", round, err)
		}
		fc.send([]any{"test.log", 1, map[string]any{"uid": fmt.Sprintf("fwd-%d", round)}, map[string]any{"chunk": "c"}})
		if v, err := fc.read(); err != nil || fmt.Sprint(v) != fmt.Sprint(map[string]any{"ack": "c"}) {
			t.Fatalf("round %d: in_forward after Up answered %#v, %v; want the ack", round, v, err)
		}
		c.CloseIdleConnections()
	}
	if n := s.Stats().StoredTotal; n != 4 {
		t.Errorf("stored %d, want 4", n)
	}
	for _, o := range []Options{{Addr: s.Addr(), PlainHTTP: true}, {PlainHTTP: true, ForwardAddr: s.ForwardAddr()}} {
		other, err := Start(context.Background(), o)
		if err == nil {
			_ = other.Close()
			t.Errorf("a second server started on a port the first has (%+v)", o)
		} else if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("a second server on a taken port: %v, want address already in use", err)
		}
	}
}

func TestDownCutsKeepAliveConnections(t *testing.T) {
	s := startServer(t, Options{})
	c := newClient(t, getPKI(t).client)
	mustPost(t, c, s, "test.log", `{"uid":"1"}`)
	s.Down(0)
	// The idle keep-alive connection was cut: the request fails with EOF (or
	// connection refused, if the client noticed the close first). A POST is
	// not replayed by net/http, so this is what a sink sees.
	if _, err := post(t, c, s, "test.log", []byte(`{"uid":"lost"}`)); err == nil {
		t.Fatal("request on a cut connection succeeded")
	}
	if err := s.Up(); err != nil {
		t.Fatal(err)
	}
	if r := mustPost(t, c, s, "test.log", `{"uid":"2"}`); r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	if st := s.Stats(); st.Connections != 2 || st.StoredTotal != 2 {
		t.Errorf("connections=%d stored=%d, want 2 and 2 (one connection before, one after the restart)", st.Connections, st.StoredTotal)
	}
}

func TestStatsEndpoint(t *testing.T) {
	s := startServer(t, Options{StatsAddr: "127.0.0.1:0", KeepRecords: true})
	c := newClient(t, getPKI(t).client)
	mustPost(t, c, s, "test.log", `[{"uid":"a"},{"uid":"a"},{"uid":"b"}]`)
	mustPost(t, c, s, "test.log", `{"time":3}`)
	mustPost(t, c, s, "test.log", `nope`)

	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(plain.CloseIdleConnections)
	get := func(path string, v any) {
		t.Helper()
		resp, err := plain.Get(s.StatsURL() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: status %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	send := func(method, path, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, s.StatsURL()+path, strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	var st Stats
	get("/stats", &st)
	if st.Requests != 3 || st.Stored["test.log"] != 3 || st.Duplicates["test.log"] != 1 || st.Rejected != 1 || st.Dropped != 1 {
		t.Errorf("/stats = %+v", st)
	}
	var ids map[string]int
	get("/ids?tag=test.log", &ids)
	if ids["a"] != 2 || ids["b"] != 1 || len(ids) != 2 {
		t.Errorf("/ids = %v", ids)
	}
	var recs []map[string]any
	get("/records?tag=test.log", &recs)
	if len(recs) != 3 || recs[2]["id"] != "b" {
		t.Errorf("/records = %v", recs)
	}

	if code := send(http.MethodPut, "/faults", `{"error_percent":100,"latency":"10ms","poison":[{"field":"x","value":"y"}]}`); code != 200 {
		t.Fatalf("PUT /faults: status %d", code)
	}
	if f := s.Faults(); f.ErrorPercent != 100 || f.Latency != 10*time.Millisecond || len(f.Poison) != 1 {
		t.Errorf("faults after PUT = %+v", f)
	}
	if code := send(http.MethodPut, "/faults", `{"drop_percent":-1}`); code != 400 {
		t.Errorf("PUT bad faults: status %d, want 400", code)
	}
	if code := send(http.MethodPost, "/down?for=1h", ""); code != 204 || !s.IsDown() {
		t.Errorf("POST /down: status %d, down %v", code, s.IsDown())
	}
	if code := send(http.MethodPost, "/up", ""); code != 204 || s.IsDown() {
		t.Errorf("POST /up: status %d, down %v", code, s.IsDown())
	}
	if code := send(http.MethodPost, "/reset", ""); code != 204 || s.Stats().StoredTotal != 0 {
		t.Errorf("POST /reset: status %d, stored %d", code, s.Stats().StoredTotal)
	}
}

func TestContextCancelCloses(t *testing.T) {
	p := getPKI(t)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Options{CAPEM: p.ca.CertPEM, CertPEM: p.server.CertPEM, KeyPEM: p.server.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server still running 5s after its context was cancelled")
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("dial succeeded after close")
	}

	// A context that is already done closes the server at once.
	s, err = Start(ctx, Options{CAPEM: p.ca.CertPEM, CertPEM: p.server.CertPEM, KeyPEM: p.server.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server started with a done context still running after 5s")
	}
}

func TestWaitStored(t *testing.T) {
	s := startServer(t, Options{})
	c := newClient(t, getPKI(t).client)
	go func() { mustPostNoT(c, s, `[{"uid":"1"},{"uid":"2"}]`) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitStored(ctx, 2); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := s.WaitStored(short, 3); err == nil || !strings.Contains(err.Error(), "have 2") {
		t.Errorf("WaitStored(3) = %v, want a timeout saying 2 are stored", err)
	}
}

// mustPostNoT posts from a goroutine, where t.Fatal may not be called.
func mustPostNoT(c *http.Client, s *Server, body string) {
	resp, err := c.Post(s.URL()+"/test.log", "application/json", strings.NewReader(body))
	if err == nil {
		resp.Body.Close()
	}
}
