package fluentdsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, plus a client certificate from another CA.
type testPKI struct {
	ca, otherCA           *certs.CA
	server, client, other *certs.Pair
}

var (
	pkiOnce sync.Once
	pki     testPKI
	pkiErr  error
)

// getPKI makes the certificates once per test binary (ECDSA: fast).
func getPKI(t testing.TB) testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		ecdsa := certs.Request{KeyType: certs.KeyECDSA}
		mk := func(ca *certs.CA, cn string, u certs.Usage) *certs.Pair {
			if pkiErr != nil {
				return nil
			}
			req := ecdsa
			req.CommonName, req.Usage = cn, u
			req.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
			p, err := ca.Issue(req)
			pkiErr = err
			return p
		}
		caReq, otherReq := ecdsa, ecdsa
		caReq.CommonName, otherReq.CommonName = "test CA", "other CA"
		if pki.ca, pkiErr = certs.NewCA(caReq); pkiErr != nil {
			return
		}
		if pki.otherCA, pkiErr = certs.NewCA(otherReq); pkiErr != nil {
			return
		}
		pki.server = mk(pki.ca, "fluentd", certs.ServerAuth)
		pki.client = mk(pki.ca, "sink", certs.ClientAuth)
		pki.other = mk(pki.otherCA, "stranger", certs.ClientAuth)
	})
	if pkiErr != nil {
		t.Fatalf("make test certificates: %v", pkiErr)
	}
	return pki
}

// startServer starts a server with the test PKI in memory; opts may set
// anything else. It is closed when the test ends.
func startServer(t testing.TB, opts Options) *Server {
	t.Helper()
	p := getPKI(t)
	if !opts.PlainHTTP && opts.CertFile == "" {
		opts.CAPEM, opts.CertPEM, opts.KeyPEM = p.ca.CertPEM, p.server.CertPEM, p.server.KeyPEM
	}
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// newClient is an HTTPS client presenting pair (nil: no client certificate)
// and trusting the test CA.
func newClient(t testing.TB, pair *certs.Pair) *http.Client {
	t.Helper()
	p := getPKI(t)
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if pair != nil {
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{pair.Cert.Raw}, PrivateKey: pair.Key, Leaf: pair.Cert}}
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// response is what a test checks of an answer.
type response struct {
	code int
	body string
}

// post sends body to <server>/<tag> with extra headers.
func post(t *testing.T, c *http.Client, s *Server, tag string, body []byte, hdr ...string) (response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/"+tag, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{code: resp.StatusCode, body: string(b)}, nil
}

// mustPost is post that fails the test on a transport error.
func mustPost(t *testing.T, c *http.Client, s *Server, tag, body string, hdr ...string) response {
	t.Helper()
	r, err := post(t, c, s, tag, []byte(body), hdr...)
	if err != nil {
		t.Fatalf("POST /%s: %v", tag, err)
	}
	return r
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
