package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testPKI is a CA with a server and a client certificate, ECDSA to keep the
// tests quick (RSA has its own tests).
type testPKI struct {
	ca             *CA
	server, client *Pair
}

func newPKI(t *testing.T, kt KeyType) testPKI {
	t.Helper()
	ca, err := NewCA(Request{CommonName: "test CA", KeyType: kt})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	server, err := ca.Issue(Request{CommonName: "localhost", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usage: ServerAuth, KeyType: kt})
	if err != nil {
		t.Fatalf("Issue server: %v", err)
	}
	client, err := ca.Issue(Request{CommonName: "client", Usage: ClientAuth, KeyType: kt})
	if err != nil {
		t.Fatalf("Issue client: %v", err)
	}
	return testPKI{ca: ca, server: server, client: client}
}

func TestChainVerifiesForItsUsage(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSA, KeyRSA} {
		t.Run(string(kt), func(t *testing.T) {
			p := newPKI(t, kt)
			roots := x509.NewCertPool()
			roots.AddCert(p.ca.Cert)
			if _, err := p.server.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost",
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("server cert for serverAuth: %v", err)
			}
			if _, err := p.server.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err != nil {
				t.Errorf("server cert for IP 127.0.0.1: %v", err)
			}
			if _, err := p.client.Cert.Verify(x509.VerifyOptions{Roots: roots,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("client cert for clientAuth: %v", err)
			}
			if _, err := p.client.Cert.Verify(x509.VerifyOptions{Roots: roots,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
				t.Error("client cert verified for serverAuth; want refusal")
			}
			if !p.ca.Cert.IsCA || p.server.Cert.IsCA {
				t.Errorf("IsCA: CA %v, server %v", p.ca.Cert.IsCA, p.server.Cert.IsCA)
			}
		})
	}
}

func TestKeyTypesAndDefaults(t *testing.T) {
	p := newPKI(t, KeyRSA)
	k, ok := p.server.Key.(*rsa.PrivateKey)
	if !ok || k.N.BitLen() != DefaultRSABits {
		t.Fatalf("default key: %T, want %d-bit RSA", p.server.Key, DefaultRSABits)
	}
	ttl := p.server.Cert.NotAfter.Sub(p.server.Cert.NotBefore)
	if ttl != DefaultTTL {
		t.Errorf("validity %s, want %s", ttl, DefaultTTL)
	}
	if d := time.Since(p.server.Cert.NotBefore); d < DefaultBackdate-time.Second || d > DefaultBackdate+time.Minute {
		t.Errorf("NotBefore %s ago, want about %s", d, DefaultBackdate)
	}
	e := newPKI(t, KeyECDSA)
	if _, ok := e.client.Key.(*ecdsa.PrivateKey); !ok {
		t.Errorf("ecdsa key: got %T", e.client.Key)
	}
	if _, err := NewCA(Request{CommonName: "x", KeyType: "dsa"}); err == nil || !strings.Contains(err.Error(), `"dsa"`) {
		t.Errorf("unknown key type: err %v, want it named", err)
	}
	if _, err := NewCA(Request{CommonName: "x", RSABits: 1024}); err == nil || !strings.Contains(err.Error(), "1024") {
		t.Errorf("1024-bit RSA: err %v, want refusal naming 1024", err)
	}
}

func TestEncryptedKeyRoundTrip(t *testing.T) {
	p := newPKI(t, KeyECDSA)
	rsaCA, err := NewCA(Request{CommonName: "rsa"})
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"ecdsa": p.server.Key, "rsa": rsaCA.Key} {
		t.Run(name, func(t *testing.T) {
			pass := []byte("correct horse")
			enc, err := EncryptKeyPEM(key, pass)
			if err != nil {
				t.Fatalf("EncryptKeyPEM: %v", err)
			}
			if first := strings.SplitN(string(enc), "\n", 2)[0]; first != "-----BEGIN ENCRYPTED PRIVATE KEY-----" {
				t.Fatalf("PEM header %q", first)
			}
			got, err := ParseKeyPEM(enc, pass)
			if err != nil {
				t.Fatalf("ParseKeyPEM: %v", err)
			}
			if !key.(interface{ Equal(crypto.PrivateKey) bool }).Equal(got) {
				t.Error("decrypted key differs from the original")
			}
			if _, err := ParseKeyPEM(enc, []byte("wrong horse")); !errors.Is(err, ErrBadPassphrase) {
				t.Errorf("wrong passphrase: err %v, want ErrBadPassphrase", err)
			}
			if _, err := ParseKeyPEM(enc, nil); !errors.Is(err, ErrPassphraseRequired) {
				t.Errorf("no passphrase: err %v, want ErrPassphraseRequired", err)
			}
		})
	}
}

func TestParseKeyPEMFormats(t *testing.T) {
	ca, err := NewCA(Request{CommonName: "rsa"})
	if err != nil {
		t.Fatal(err)
	}
	ec, err := NewCA(Request{CommonName: "ec", KeyType: KeyECDSA})
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := ca.Key.(*rsa.PrivateKey)
	ecKey := ec.Key.(*ecdsa.PrivateKey)
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 the legacy form is what older files hold.
	legacy, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey), []byte("pw"), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		pem  []byte
		pass string
		want crypto.PrivateKey
	}{
		{"PKCS#1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), "", rsaKey},
		{"SEC1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), "", ecKey},
		{"PKCS#8 after a certificate", append(append([]byte{}, ec.CertPEM...), ec.KeyPEM...), "", ecKey},
		{"legacy DEK-Info", pem.EncodeToMemory(legacy), "pw", rsaKey},
	}
	for _, c := range cases {
		got, err := ParseKeyPEM(c.pem, []byte(c.pass))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !got.(interface{ Equal(crypto.PrivateKey) bool }).Equal(c.want) {
			t.Errorf("%s: parsed key differs", c.name)
		}
	}
	if _, err := ParseKeyPEM(pem.EncodeToMemory(legacy), []byte("nope")); !errors.Is(err, ErrBadPassphrase) {
		t.Errorf("legacy, wrong passphrase: err %v, want ErrBadPassphrase", err)
	}
	if _, err := ParseKeyPEM([]byte("not a key"), nil); err == nil || !strings.Contains(err.Error(), "no PEM private key") {
		t.Errorf("garbage: err %v", err)
	}
}

// TestOpenSSLReadsEncryptedKey checks the format against what Fluentd uses
// to open server.key: OpenSSL.
func TestOpenSSLReadsEncryptedKey(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH")
	}
	for _, kt := range []KeyType{KeyRSA, KeyECDSA} {
		ca, err := NewCA(Request{CommonName: "k", KeyType: kt})
		if err != nil {
			t.Fatal(err)
		}
		enc, err := EncryptKeyPEM(ca.Key, []byte("s3cret pass"))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "key.pem")
		if err := WriteFile(path, enc, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "pkey", "-in", path, "-passin", "pass:s3cret pass", "-pubout").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: openssl pkey with the passphrase: %v\n%s", kt, err, out)
		}
		if !strings.Contains(string(out), "BEGIN PUBLIC KEY") {
			t.Errorf("%s: openssl output %q", kt, out)
		}
		if out, err := exec.Command(bin, "pkey", "-in", path, "-passin", "pass:wrong", "-noout").CombinedOutput(); err == nil {
			t.Errorf("%s: openssl opened the key with a wrong passphrase: %s", kt, out)
		}
	}
	// And the other way: a key OpenSSL encrypted opens here.
	path := filepath.Join(t.TempDir(), "openssl.pem")
	out, err := exec.Command(bin, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-aes-256-cbc", "-pass", "pass:from openssl", "-out", path).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyPEM(data, []byte("from openssl")); err != nil {
		t.Errorf("ParseKeyPEM of an OpenSSL-encrypted key: %v", err)
	}
	if _, err := ParseKeyPEM(data, []byte("other")); !errors.Is(err, ErrBadPassphrase) {
		t.Errorf("OpenSSL-encrypted key, wrong passphrase: err %v, want ErrBadPassphrase", err)
	}
}

// writePair writes a certificate and key to files and returns their paths.
func writePair(t *testing.T, dir, name string, certPEM, keyPEM []byte) (string, string) {
	t.Helper()
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// handshake runs one mTLS exchange over 127.0.0.1 and returns the client's
// and the server's errors.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var g errgroup.Group
	g.Go(func() error {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := conn.(*tls.Conn).HandshakeContext(ctx); err != nil {
			return err
		}
		_, err = io.Copy(conn, io.LimitReader(conn, 5))
		return err
	})
	clientErr = func() error {
		d := tls.Dialer{Config: clientCfg}
		conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3 reports a refused client certificate on the first read.
		if _, err := conn.Write([]byte("hello")); err != nil {
			return err
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != "hello" {
			return errors.New("echo mismatch: " + string(buf))
		}
		return nil
	}()
	// Unblocks Accept if the client never connected.
	ln.Close()
	serverErr = g.Wait()
	return clientErr, serverErr
}

func TestMutualTLSHandshake(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, KeyECDSA)
	caFile := filepath.Join(dir, "ca.crt")
	if err := WriteFile(caFile, p.ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	encServerKey, err := EncryptKeyPEM(p.server.Key, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	sCert, sKey := writePair(t, dir, "server", p.server.CertPEM, encServerKey)
	cCert, cKey := writePair(t, dir, "client", p.client.CertPEM, p.client.KeyPEM)

	pool, err := LoadCertPool(caFile)
	if err != nil {
		t.Fatalf("LoadCertPool: %v", err)
	}
	serverPair, err := LoadKeyPair(sCert, sKey, []byte("pass"))
	if err != nil {
		t.Fatalf("LoadKeyPair server: %v", err)
	}
	clientPair, err := LoadKeyPair(cCert, cKey, nil)
	if err != nil {
		t.Fatalf("LoadKeyPair client: %v", err)
	}
	serverCfg := &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	clientCfg := &tls.Config{Certificates: []tls.Certificate{clientPair}, RootCAs: pool,
		ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}

	t.Run("same CA", func(t *testing.T) {
		if cErr, sErr := handshake(t, serverCfg, clientCfg); cErr != nil || sErr != nil {
			t.Fatalf("handshake: client %v, server %v", cErr, sErr)
		}
	})
	t.Run("client cert from a foreign CA", func(t *testing.T) {
		foreign := newPKI(t, KeyECDSA)
		fc, err := tls.X509KeyPair(foreign.client.CertPEM, foreign.client.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		bad := clientCfg.Clone()
		bad.Certificates = []tls.Certificate{fc}
		cErr, sErr := handshake(t, serverCfg, bad)
		if cErr == nil || sErr == nil {
			t.Fatalf("handshake with a foreign client cert: client %v, server %v; want both to fail", cErr, sErr)
		}
		if !strings.Contains(sErr.Error(), "certificate") {
			t.Errorf("server error %q does not mention the certificate", sErr)
		}
	})
	t.Run("no client cert", func(t *testing.T) {
		bad := clientCfg.Clone()
		bad.Certificates = nil
		if cErr, sErr := handshake(t, serverCfg, bad); cErr == nil || sErr == nil {
			t.Fatalf("handshake without a client cert: client %v, server %v; want both to fail", cErr, sErr)
		}
	})
}

func TestLoadKeyPairErrors(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, KeyECDSA)
	expiredCA, err := NewCA(Request{CommonName: "old", KeyType: KeyECDSA, NotBefore: time.Now().Add(-48 * time.Hour), TTL: 72 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := expiredCA.Issue(Request{CommonName: "expired", KeyType: KeyECDSA, Usage: ClientAuth,
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	okCert, okKey := writePair(t, dir, "ok", p.client.CertPEM, p.client.KeyPEM)
	expCert, expKey := writePair(t, dir, "expired", expired.CertPEM, expired.KeyPEM)
	encKeyPEM, err := EncryptKeyPEM(p.client.Key, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	_, encKey := writePair(t, dir, "enc", p.client.CertPEM, encKeyPEM)
	notPEM := filepath.Join(dir, "garbage.crt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")

	cases := []struct {
		name, cert, key, pass string
		want                  []string
		is                    error
	}{
		{"unreadable cert", missing, okKey, "", []string{missing}, os.ErrNotExist},
		{"unreadable key", okCert, missing, "", []string{missing}, os.ErrNotExist},
		{"cert not PEM", notPEM, okKey, "", []string{notPEM, "not PEM"}, nil},
		{"key not PEM", okCert, notPEM, "", []string{notPEM, "no PEM private key"}, nil},
		{"key of another cert", okCert, expKey, "", []string{expKey, okCert, "does not match"}, nil},
		{"expired", expCert, expKey, "", []string{expCert, "NotAfter 2020-01-01T01:00:00Z"}, ErrCertificateExpired},
		{"encrypted, no passphrase", okCert, encKey, "", []string{encKey}, ErrPassphraseRequired},
		{"encrypted, wrong passphrase", okCert, encKey, "nope", []string{encKey}, ErrBadPassphrase},
	}
	for _, c := range cases {
		_, err := LoadKeyPair(c.cert, c.key, []byte(c.pass))
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, err, w)
			}
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: error %q is not %v", c.name, err, c.is)
		}
	}
	if _, err := LoadKeyPair(okCert, encKey, []byte("pw")); err != nil {
		t.Errorf("encrypted key with its passphrase: %v", err)
	}
	if _, err := LoadCertPool(notPEM); err == nil || !strings.Contains(err.Error(), notPEM) {
		t.Errorf("LoadCertPool of garbage: err %v, want the file named", err)
	}
}

func TestWriteFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "two" {
		t.Errorf("content %q (%v), want %q", b, err, "two")
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("%d files in the directory, want 1 (no temporary left)", len(entries))
	}
	if err := WriteFile(filepath.Join(path, "x"), nil, 0o600); err == nil {
		t.Error("write under a regular file: no error")
	}
}
