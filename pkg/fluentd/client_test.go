package fluentd

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pki is a CA with a server and a client certificate written to files, the
// way `configure` lays them out.
type pki struct {
	dir                   string
	ca                    *certs.CA
	caFile                string
	serverCert            tls.Certificate
	clientCert, clientKey string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA(certs.Request{CommonName: "test ca", KeyType: certs.KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(certs.Request{CommonName: "localhost", DNSNames: []string{"localhost", "fluentd.test"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usage: certs.ServerAuth, KeyType: certs.KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Issue(certs.Request{CommonName: "sink", Usage: certs.ClientAuth, KeyType: certs.KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.crt"),
		clientCert: filepath.Join(dir, "client.crt"), clientKey: filepath.Join(dir, "client.key")}
	write(t, p.caFile, ca.CertPEM)
	write(t, p.clientCert, cli.CertPEM)
	write(t, p.clientKey, cli.KeyPEM)
	p.serverCert, err = tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// receiver is a minimal in_http stand-in: it records bodies and answers
// with status, requiring a client certificate from the pki's CA.
type receiver struct {
	srv    *httptest.Server
	status atomic.Int32
	conns  atomic.Int32
	mu     sync.Mutex
	bodies []string
}

func newReceiver(t *testing.T, p *pki) *receiver {
	t.Helper()
	r := &receiver{}
	r.status.Store(200)
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				w.WriteHeader(400)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		r.mu.Lock()
		r.bodies = append(r.bodies, req.URL.Path+" "+string(b))
		r.mu.Unlock()
		st := int(r.status.Load())
		w.WriteHeader(st)
		if st >= 400 {
			_, _ = io.WriteString(w, "400 Bad Request\ninvalid time format")
		}
	}))
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	r.srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.serverCert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert}
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

func (p *pki) config(url string) config.FluentdConfig {
	return config.FluentdConfig{URL: url, SessionURL: url + "/session", CA: p.caFile, Cert: p.clientCert, Key: p.clientKey}
}

func newClient(t *testing.T, cfg config.FluentdConfig, opts ...Option) *Client {
	t.Helper()
	c, err := New(cfg, zerolog.Nop(), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func recs(s ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(s))
	for i, r := range s {
		out[i] = json.RawMessage(r)
	}
	return out
}

func TestSendObjectAndArrayOverMTLS(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	c := newClient(t, p.config(r.srv.URL+"/test.log"))
	ctx := context.Background()
	if _, err := c.Send(ctx, r.srv.URL+"/test.log", recs(`{"a":1}`)); err != nil {
		t.Fatalf("send one: %v", err)
	}
	res, err := c.Send(ctx, r.srv.URL+"/test.log", recs(`{"a":1}`, `{"b":2}`))
	if err != nil || res.Status != 200 {
		t.Fatalf("send two: %v %+v", err, res)
	}
	want := []string{`/test.log {"a":1}`, `/test.log [{"a":1},{"b":2}]`}
	if got := r.got(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("bodies:\n%q\nwant\n%q", got, want)
	}
}

func TestSend201IsSuccessAndKeepAlive(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	r.status.Store(201)
	c := newClient(t, p.config(r.srv.URL+"/test.log"))
	for i := 0; i < 20; i++ {
		res, err := c.Send(context.Background(), r.srv.URL+"/test.log", recs(`{"n":1}`))
		if err != nil || !res.OK() || res.Status != 201 {
			t.Fatalf("send %d: %v %+v", i, err, res)
		}
	}
	if n := r.conns.Load(); n != 1 {
		t.Fatalf("20 sequential requests used %d connections, want 1 (keep-alive)", n)
	}
}

func TestSendGzip(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	c := newClient(t, p.config(r.srv.URL+"/t"), WithGzip(true))
	if _, err := c.Send(context.Background(), r.srv.URL+"/t", recs(`{"a":1}`, `{"a":2}`)); err != nil {
		t.Fatal(err)
	}
	if got := r.got(); len(got) != 1 || got[0] != `/t [{"a":1},{"a":2}]` {
		t.Fatalf("got %q", got)
	}
}

func TestSendClassifiesAnswers(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	c := newClient(t, p.config(r.srv.URL+"/t"))
	r.status.Store(400)
	res, err := c.Send(context.Background(), r.srv.URL+"/t", recs(`{"time":1}`))
	if !Refused(err) || Retryable(err) || res.Status != 400 || !strings.Contains(res.Answer, "invalid time format") {
		t.Fatalf("400: err=%v refused=%v res=%+v", err, Refused(err), res)
	}
	r.status.Store(413)
	if _, err = c.Send(context.Background(), r.srv.URL+"/t", recs(`{}`)); !Refused(err) {
		t.Fatalf("413: err=%v should be a refusal", err)
	}
	for _, st := range []int{500, 503, 403, 404, 429, 302} {
		r.status.Store(int32(st))
		_, err = c.Send(context.Background(), r.srv.URL+"/t", recs(`{}`))
		if Refused(err) || !Retryable(err) {
			t.Fatalf("%d: err=%v should be retryable", st, err)
		}
	}
	r.srv.Close()
	_, err = c.Send(context.Background(), r.srv.URL+"/t", recs(`{}`))
	if !Retryable(err) {
		t.Fatalf("connection refused: err=%v should be retryable", err)
	}
}

func TestWrongCAIsExplained(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	other := newPKI(t)
	cfg := p.config(r.srv.URL + "/t")
	cfg.CA = other.caFile
	c := newClient(t, cfg)
	_, err := c.Send(context.Background(), r.srv.URL+"/t", recs(`{}`))
	if err == nil || !Retryable(err) || !strings.Contains(err.Error(), "the Fluentd server's certificate is not signed by ca "+other.caFile) {
		t.Fatalf("err = %v", err)
	}
}

// TestPlainHTTPServerIsExplained: an https URL to a plain-http Fluentd (net/http
// answers "server gave HTTP response to HTTPS client") gets the sentence
// docs/troubleshooting.md quotes.
func TestPlainHTTPServerIsExplained(t *testing.T) {
	p := newPKI(t)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer plain.Close()
	url := "https://" + strings.TrimPrefix(plain.URL, "http://") + "/t"
	c := newClient(t, p.config(url))
	_, err := c.Send(context.Background(), url, recs(`{}`))
	if err == nil || !Retryable(err) || !strings.Contains(err.Error(), "the Fluentd server did not answer with TLS (is it plain http?)") {
		t.Fatalf("err = %v", err)
	}
}

func TestMissingClientCertIsExplained(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	cfg := p.config(r.srv.URL + "/t")
	cfg.Cert, cfg.Key = "", ""
	c := newClient(t, cfg)
	_, err := c.Send(context.Background(), r.srv.URL+"/t", recs(`{}`))
	if err == nil || !strings.Contains(err.Error(), "Fluentd refused our client certificate (client_cert_auth)") {
		t.Fatalf("err = %v", err)
	}
}

func TestEncryptedKey(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	cli, err := p.ca.Issue(certs.Request{CommonName: "sink2", KeyType: certs.KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := certs.EncryptKeyPEM(cli.Key, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.config(r.srv.URL + "/t")
	cfg.Cert, cfg.Key = filepath.Join(p.dir, "enc.crt"), filepath.Join(p.dir, "enc.key")
	write(t, cfg.Cert, cli.CertPEM)
	write(t, cfg.Key, enc)

	passFile := filepath.Join(p.dir, "pass")
	write(t, passFile, []byte("s3cret\n"))
	cfg.KeyPassphraseFile = passFile
	c := newClient(t, cfg)
	if _, err := c.Send(context.Background(), r.srv.URL+"/t", recs(`{}`)); err != nil {
		t.Fatalf("send with passphrase file: %v", err)
	}

	cfg.KeyPassphraseFile = ""
	cfg.KeyPassphrase = "Xq9-guess"
	_, err = New(cfg, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), cfg.Key) {
		t.Fatalf("wrong passphrase: err = %v, want it to name %s", err, cfg.Key)
	}
	if strings.Contains(err.Error(), "Xq9-guess") {
		t.Fatalf("error leaks the passphrase: %v", err)
	}
}

func TestBadKeyPairNamesFiles(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	cfg := p.config("https://127.0.0.1:1/t")
	cfg.Key = other.clientKey
	if _, err := New(cfg, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), other.clientKey) {
		t.Fatalf("mismatched key: err = %v", err)
	}
	cfg = p.config("https://127.0.0.1:1/t")
	cfg.Cert = filepath.Join(p.dir, "missing.crt")
	if _, err := New(cfg, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Fatalf("missing cert: err = %v", err)
	}
}

func TestPlainHTTPRefusedUnlessInsecure(t *testing.T) {
	cfg := config.FluentdConfig{URL: "http://127.0.0.1:8888/test.log"}
	_, err := New(cfg, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:8888/test.log") || !strings.Contains(err.Error(), "--insecure-http") {
		t.Fatalf("err = %v", err)
	}
	cfg.InsecureHTTP = true
	c, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestSessionURL(t *testing.T) {
	if got := SessionURL("https://f:8888/session", "0b1c-2d"); got != "https://f:8888/session.0b1c-2d.log" {
		t.Fatal(got)
	}
}

// TestHTTPSProxyHonoured posts to a host only the proxy can reach: the
// request must go through HTTPS_PROXY as a CONNECT tunnel, with mTLS end to
// end.
func TestHTTPSProxyHonoured(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	target := r.srv.Listener.Addr().String()
	var tunnels atomic.Int32
	// mu orders the handler's wg.Add before the final wg.Wait for the race
	// detector, which does not see the ordering through the network.
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodConnect || !strings.HasPrefix(req.Host, "fluentd.test:") {
			http.Error(w, "unexpected "+req.Method+" "+req.Host, http.StatusBadRequest)
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		down, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			up.Close()
			return
		}
		tunnels.Add(1)
		_, _ = io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
		mu.Lock()
		wg.Add(2)
		mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(up, down)
		go pipe(down, up)
	}))
	defer func() {
		proxy.Close()
		mu.Lock()
		mu.Unlock() //nolint:staticcheck // an ordering point, see mu
		wg.Wait()
	}()
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "")
	_, port, err := net.SplitHostPort(target)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://fluentd.test:" + port + "/proxied.log"
	c, err := New(p.config(url), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(context.Background(), url, recs(`{"via":"proxy"}`)); err != nil {
		t.Fatalf("send through proxy: %v", err)
	}
	c.Close()
	if tunnels.Load() != 1 {
		t.Fatalf("%d CONNECT tunnels, want 1", tunnels.Load())
	}
	if got := r.got(); len(got) != 1 || got[0] != `/proxied.log {"via":"proxy"}` {
		t.Fatalf("got %q", got)
	}
}

func TestServerNameOverride(t *testing.T) {
	p := newPKI(t)
	r := newReceiver(t, p)
	cfg := p.config(r.srv.URL + "/t")
	cfg.ServerName = "fluentd.test"
	c := newClient(t, cfg)
	if _, err := c.Send(context.Background(), r.srv.URL+"/t", recs(`{}`)); err != nil {
		t.Fatalf("server-name in the certificate: %v", err)
	}
	cfg.ServerName = "elsewhere.test"
	c = newClient(t, cfg)
	_, err := c.Send(context.Background(), r.srv.URL+"/t", recs(`{}`))
	if err == nil || !strings.Contains(err.Error(), `not valid for "elsewhere.test"`) {
		t.Fatalf("err = %v", err)
	}
}
