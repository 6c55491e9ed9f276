package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// files are a test PKI on disk, the server key encrypted as `configure`
// writes it.
type files struct {
	ca, cert, key, pass string
	client              tls.Certificate
	roots               *x509.CertPool
}

func writeFiles(t *testing.T) files {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA(certs.Request{CommonName: "ca", KeyType: certs.KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(certs.Request{CommonName: "fluentd", KeyType: certs.KeyECDSA, Usage: certs.ServerAuth,
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Issue(certs.Request{CommonName: "sink", KeyType: certs.KeyECDSA, Usage: certs.ClientAuth})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := certs.EncryptKeyPEM(srv.Key, []byte("pass phrase"))
	if err != nil {
		t.Fatal(err)
	}
	f := files{ca: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "server.crt"), key: filepath.Join(dir, "server.key"),
		pass: "pass phrase", roots: x509.NewCertPool()}
	for name, data := range map[string][]byte{f.ca: ca.CertPEM, f.cert: srv.CertPEM, f.key: enc} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.roots.AddCert(ca.Cert)
	f.client = tls.Certificate{Certificate: [][]byte{cli.Cert.Raw}, PrivateKey: cli.Key}
	return f
}

func (f files) args(extra ...string) []string {
	return append([]string{"-addr", "127.0.0.1:0", "-ca", f.ca, "-cert", f.cert, "-key", f.key, "-key-passphrase", f.pass}, extra...)
}

func TestBadInvocations(t *testing.T) {
	f := writeFiles(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	missing := filepath.Join(t.TempDir(), "nope.crt")

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"-bogus"}, "flag provided but not defined: -bogus"},
		{"bad duration", []string{"-latency", "soon"}, `invalid value "soon" for flag -latency`},
		{"no certificates", nil, "-ca, -cert and -key are required"},
		{"error rate out of range", f.args("-error-rate", "150"), "-error-rate 150: want a percent within 0-100"},
		{"bad poison rule", f.args("-poison", "novalue"), `-poison "novalue": want field=value`},
		{"down-after alone", f.args("-down-after", "1s"), "-down-after and -down-for go together"},
		{"positional argument", f.args("extra"), `unexpected argument "extra"`},
		{"unreadable CA", []string{"-ca", missing, "-cert", f.cert, "-key", f.key}, "nope.crt"},
		{"wrong passphrase", append(f.args(), "-key-passphrase", "wrong"), "passphrase"},
		{"port in use", append(f.args(), "-addr", busy.Addr().String()), "address already in use"},
		{"users without a shared key", f.args("-forward-addr", "127.0.0.1:0", "-users", "u=p"), "-users needs a shared key"},
		{"bad users", f.args("-users", "nopass"), `-users "nopass": want user=password`},
		{"shared key without forward", f.args("-shared-key-file", f.ca), "set -forward-addr"},
		{"missing shared key file", f.args("-forward-addr", "127.0.0.1:0", "-shared-key-file", missing), "nope.crt"},
		{"forward port in use", f.args("-forward-addr", busy.Addr().String()), "in_forward: listen"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), c.args, &out, &errOut)
			if err == nil {
				t.Fatalf("run succeeded, want an error with %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans several lines", err)
			}
			if strings.Contains(err.Error(), f.pass) {
				t.Errorf("error %q shows the passphrase", err)
			}
		})
	}
}

var readyRE = regexp.MustCompile(`fluentd-sim ready url=(\S+) stats=(\S+)`)

// startRun runs the command until the returned cancel is called; it
// returns the two URLs from the ready line.
func startRun(t *testing.T, args []string) (url, stats string, out *logtest.Buffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &logtest.Buffer{}
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, args, out, &logtest.Buffer{}) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := readyRE.FindStringSubmatch(out.String()); m != nil {
			url, stats = m[1], m[2]
			break
		}
		select {
		case err := <-errc:
			cancel()
			t.Fatalf("run ended before ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("no ready line after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-errc })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return url, stats, out, stop
}

func TestServesAndPrintsCounts(t *testing.T) {
	f := writeFiles(t)
	jsonl := filepath.Join(t.TempDir(), "out.jsonl")
	url, stats, out, stop := startRun(t, f.args("-jsonl", jsonl, "-match", "test.log, session.*.log", "-poison", "event=bad"))
	if !strings.HasPrefix(url, "https://127.0.0.1:") || !strings.HasPrefix(stats, "http://127.0.0.1:") {
		t.Fatalf("ready line URLs: %s %s", url, stats)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.roots, Certificates: []tls.Certificate{f.client}}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for body, want := range map[string]int{
		`[{"uid":"a","time":"2024-01-02T03:04:05.461Z"},{"uid":"b"}]`: 200,
		`{"uid":"c","event":"bad"}`:                                   400,
		`{"time":"nope"}`:                                             400,
	} {
		resp, err := c.Post(url+"/test.log", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // drained, so the connection is kept
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST %s: status %d, want %d", body, resp.StatusCode, want)
		}
	}
	resp, err := http.Get(stats + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Stored   map[string]int `json:"stored"`
		Rejected int            `json:"rejected"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.Stored["test.log"] != 2 || st.Rejected != 2 {
		t.Errorf("/stats: %+v %v", st, err)
	}
	http.DefaultClient.CloseIdleConnections()

	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if want := "counts: requests=3 connections=1 stored=2 [test.log=2] duplicates=0 dropped=0 rejected=2 errors=0"; !strings.Contains(out.String(), want) {
		t.Errorf("output %q, want it to contain %q", out.String(), want)
	}
	data, err := os.ReadFile(jsonl)
	if err != nil || strings.Count(string(data), "\n") != 2 {
		t.Errorf("JSONL file: %q %v, want 2 lines", data, err)
	}
}

func TestDownAfterFor(t *testing.T) {
	f := writeFiles(t)
	url, _, _, _ := startRun(t, f.args("-down-after", "100ms", "-down-for", "300ms"))
	addr := strings.TrimPrefix(url, "https://")
	refused := func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the port to refuse connections", refused)
	waitFor("the port to accept again", func() bool { return !refused() })
}

// TestServesForward: with -forward-addr the ready line names the in_forward
// URL, which accepts TLS connections with the client certificate and sends
// the HELO of the shared-key handshake.
func TestServesForward(t *testing.T) {
	f := writeFiles(t)
	keyFile := filepath.Join(t.TempDir(), "shared.key")
	if err := os.WriteFile(keyFile, []byte("k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, out, stop := startRun(t, f.args("-forward-addr", "127.0.0.1:0", "-shared-key-file", keyFile))
	m := regexp.MustCompile(`forward=tls://(127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("ready line without forward=: %s", out.String())
	}
	conn, err := tls.Dial("tcp", m[1], &tls.Config{RootCAs: f.roots, Certificates: []tls.Certificate{f.client}, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 6)
	if _, err := io.ReadFull(conn, b); err != nil {
		t.Fatal(err)
	}
	// fixarray 2, fixstr 4 "HELO"
	if string(b) != "\x92\xa4HELO" {
		t.Errorf("first bytes %q, want the HELO message", b)
	}
	conn.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "handshake_refused=0") {
		t.Errorf("counts line lacks the forward counts: %s", out.String())
	}
}
