package bus_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// serverPKI writes a CA and a server certificate for names (as configure's
// nats-server.crt) into dir, and returns the files.
func serverPKI(t *testing.T, dir string, usage certs.Usage, names ...string) (ca, cert, key string) {
	t.Helper()
	authority, err := certs.NewCA(certs.Request{CommonName: "bus TLS test CA", KeyType: certs.KeyECDSA, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	req := certs.Request{CommonName: "nats", KeyType: certs.KeyECDSA, TTL: time.Hour, Usage: usage}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			req.IPs = append(req.IPs, ip)
		} else {
			req.DNSNames = append(req.DNSNames, n)
		}
	}
	pair, err := authority.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "nats-server.crt"), filepath.Join(dir, "nats-server.key")
	for path, data := range map[string][]byte{ca: authority.CertPEM, cert: pair.CertPEM, key: pair.KeyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// TestEmbeddedServerTLS: with [nats] server-cert and server-key the
// embedded server serves TLS only. Ingest (the process running it) works
// in process; a sink on "another host" connects with tls://, the CA and its
// NKey and reads through its durable; a client without the CA, or one
// reaching the server by a name the certificate lacks, is refused with a
// line saying what to set.
func TestEmbeddedServerTLS(t *testing.T) {
	dir := t.TempDir()
	seeds, users := roleKeys(t, dir)
	ca, cert, key := serverPKI(t, dir, certs.ServerAuth, "nats.example.internal", "127.0.0.1")
	cfg := config.Default().NATS
	cfg.Listen = "127.0.0.1:0"
	cfg.Users = users
	cfg.NKey = seeds[bus.RoleIngest]
	cfg.ServerCert, cfg.ServerKey = cert, key
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ing, err := bus.Open(ctx, cfg, filepath.Join(dir, "storage"), "ingest", zerolog.Nop(), true)
	if err != nil {
		t.Fatalf("ingest with a TLS listener: %v", err)
	}
	defer ing.Close()
	if err := ing.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := ing.JS.Publish(ctx, bus.AuditSubject("user.login"), []byte(fmt.Sprintf(`{"uid":"ev-%d"}`, i))); err != nil {
			t.Fatalf("ingest: publish: %v", err)
		}
	}
	addr := strings.TrimPrefix(strings.TrimPrefix(ing.Embedded.ClientURL(), "tls://"), "nats://")

	sinkCfg := config.Default().NATS
	sinkCfg.URL = "tls://" + addr
	sinkCfg.CA = ca
	sinkCfg.NKey = seeds[bus.RoleSink]
	snk, err := bus.Open(ctx, sinkCfg, "", "fluentd-sink", zerolog.Nop(), false)
	if err != nil {
		t.Fatalf("sink over TLS with the CA and its NKey: %v", err)
	}
	defer snk.Close()
	if !snk.Conn.TLSRequired() {
		t.Error("the sink's connection is not TLS")
	}
	def := config.Default().Sink
	cons, err := snk.JS.CreateOrUpdateConsumer(ctx, ing.Cfg.AuditStream, jetstream.ConsumerConfig{
		Durable: def.AuditConsumer, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatalf("sink: its consumer: %v", err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != 3 {
		t.Errorf("sink read %d events over TLS, want 3", got)
	}

	plain := sinkCfg
	plain.URL, plain.CA = "nats://"+addr, ""
	_, err = bus.Connect(ctx, plain, "no-ca", zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "the server's TLS certificate is not signed by a CA this command trusts: set [nats] ca to the CA that signed it (configure's ca.crt)") {
		t.Errorf("a client without the CA: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	byName := sinkCfg
	byName.URL = "tls://localhost:" + port
	_, err = bus.Connect(ctx, byName, "wrong-name", zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), `the server's TLS certificate is not valid for "localhost"`) {
		t.Errorf("a client reaching the server by a name not in its certificate: %v", err)
	}
}

// TestServerTLSBadFiles: a certificate not valid for servers (a client
// certificate given as server-cert) and a key of another kind are refused
// with a line naming the file.
func TestServerTLSBadFiles(t *testing.T) {
	dir := t.TempDir()
	_, cert, key := serverPKI(t, dir, certs.ClientAuth, "127.0.0.1")
	_, err := bus.ServerTLS(cert, key)
	want := fmt.Sprintf("NATS server TLS: certificate %q is not valid for server use (no serverAuth extended key usage), clients would refuse it: use nats-server.crt from configure, or a certificate issued for servers", cert)
	if err == nil || err.Error() != want {
		t.Errorf("client certificate as server-cert:\n got %v\nwant %s", err, want)
	}
	seed, _, err := bus.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	seedFile := filepath.Join(dir, "seed.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = bus.ServerTLS(cert, seedFile)
	if err == nil || !strings.Contains(err.Error(), seedFile) || !strings.Contains(err.Error(), "configure <dir> --nats-names") {
		t.Errorf("an NKey seed as server-key: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), strings.TrimSpace(string(seed))) {
		t.Error("the error shows the seed")
	}
}

// TestWrongCredentialFileKind: a file of another kind given as an NKey
// seed (a creds file, a certificate, an account seed, a public key) is one
// line naming the file and what it should be, and never shows the file.
func TestWrongCredentialFileKind(t *testing.T) {
	dir := t.TempDir()
	_, cert, _ := serverPKI(t, dir, certs.ServerAuth, "127.0.0.1")
	certPEM, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	_, pub, err := bus.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ body, want string }{
		"creds":        {"-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n", "is a creds file (JWT and seed): name it with [nats] creds instead"},
		"certificate":  {string(certPEM), "holds a PEM certificate or key, not an NKey seed"},
		"account seed": {"SAAGNWPHJMSUS2HYGZ4DRLQS6LYIUWDRL4TMTAQZXDWGCLA7LXLWBOB7MA\n", "holds an account or operator seed, not a user seed (SU…)"},
		"public key":   {pub + "\n", "holds a public key (U…), not the seed"},
	}
	for name, c := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".nk")
		if err := os.WriteFile(path, []byte(c.body), 0o600); err != nil {
			t.Fatal(err)
		}
		nc := config.Default().NATS
		nc.URL, nc.NKey = "nats://127.0.0.1:1", path
		_, err := bus.Connect(context.Background(), nc, "t", zerolog.Nop())
		want := fmt.Sprintf("NATS nkey seed file %q ", path) + c.want
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %s…", name, err, want)
		}
	}
}
