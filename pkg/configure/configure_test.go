package configure

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// run calls Run with ECDSA keys (fast) unless opts says otherwise, and
// returns the result and the summary.
func run(t *testing.T, opts Options) (Result, string, error) {
	t.Helper()
	if opts.KeyType == "" {
		opts.KeyType = certs.KeyECDSA
	}
	var out bytes.Buffer
	opts.Out = &out
	res, err := Run(context.Background(), opts)
	return res, out.String(), err
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var passphraseRE = regexp.MustCompile(`private_key_passphrase "((?:[^"\\]|\\.)*)"`)

// fluentPassphrase is the passphrase as fluent.conf holds it (unescaped).
func fluentPassphrase(t *testing.T, dir string) string {
	t.Helper()
	m := passphraseRE.FindStringSubmatch(read(t, filepath.Join(dir, FluentConfFile)))
	if m == nil {
		t.Fatal("fluent.conf has no private_key_passphrase")
	}
	return regexp.MustCompile(`\\(.)`).ReplaceAllString(m[1], "$1")
}

func TestRunWritesEveryFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	res, summary, err := run(t, Options{OutDir: dir, TeleportAddr: "teleport.example.com:443", KeyType: certs.KeyRSA})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := map[string]os.FileMode{
		"ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600,
		"client.crt": 0o644, "client.key": 0o600,
		RoleFile: 0o600, UserFile: 0o600, FluentConfFile: 0o600, TOMLFile: 0o600,
		"nats-ingest.nk": 0o600, "nats-fluentd-sink.nk": 0o600, "nats-reader.nk": 0o600, "nats-users.toml": 0o600,
		NATSServerCertFile: 0o644, NATSServerKeyFile: 0o600,
	}
	if len(res.Files) != len(want) {
		t.Errorf("Result.Files has %d entries, want %d: %v", len(res.Files), len(want), res.Files)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		mode, ok := want[e.Name()]
		if !ok {
			t.Errorf("unexpected file %s", e.Name())
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", e.Name(), fi.Mode().Perm(), mode)
		}
		if !strings.Contains(summary, e.Name()) {
			t.Errorf("summary does not list %s", e.Name())
		}
	}
	if len(names) != len(want) {
		sort.Strings(names)
		t.Errorf("directory holds %v, want the %d files", names, len(want))
	}

	pass := fluentPassphrase(t, dir)
	if len(pass) != 43 || res.PassphraseFromStdin {
		t.Errorf("generated passphrase has %d characters (want 43, base64url of 32 bytes), from stdin %v", len(pass), res.PassphraseFromStdin)
	}
	if strings.Contains(summary, pass) {
		t.Error("summary shows the passphrase")
	}
	for _, step := range []string{"tctl create -f " + filepath.Join(dir, RoleFile), "tctl create -f " + filepath.Join(dir, UserFile), "tctl auth sign --format=file --user=teleport-event-handler --out=" + filepath.Join(dir, "identity"), "fluentd -c", "ingest --config " + filepath.Join(dir, TOMLFile) + " --start-time " + suggestedStart(time.Now()), "fluentd-sink --config"} {
		if !strings.Contains(summary, step) {
			t.Errorf("summary lacks %q:\n%s", step, summary)
		}
	}

	keyPEM := []byte(read(t, filepath.Join(dir, "server.key")))
	if _, err := certs.ParseKeyPEM(keyPEM, []byte(pass)); err != nil {
		t.Errorf("server.key with the passphrase from fluent.conf: %v", err)
	}
	if _, err := certs.ParseKeyPEM(keyPEM, nil); !errors.Is(err, certs.ErrPassphraseRequired) {
		t.Errorf("server.key without passphrase: err %v, want ErrPassphraseRequired", err)
	}
	if _, err := certs.ParseKeyPEM(keyPEM, []byte("guess")); !errors.Is(err, certs.ErrBadPassphrase) {
		t.Errorf("server.key with a wrong passphrase: err %v, want ErrBadPassphrase", err)
	}
	if _, err := certs.ParseKeyPEM([]byte(read(t, filepath.Join(dir, "client.key"))), nil); err != nil {
		t.Errorf("client.key is not a plain key: %v", err)
	}
	k, err := certs.ParseKeyPEM([]byte(read(t, filepath.Join(dir, "ca.key"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rk, ok := k.(*rsa.PrivateKey); !ok || rk.N.BitLen() != 2048 {
		t.Errorf("ca.key: %T, want 2048-bit RSA", k)
	}
}

// TestGeneratedCertificatesWorkForMutualTLS plays the sink posting to Fluentd
// with exactly the files configure wrote.
func TestGeneratedCertificatesWorkForMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	pool, err := certs.LoadCertPool(f("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	serverPair, err := certs.LoadKeyPair(f("server.crt"), f("server.key"), []byte(fluentPassphrase(t, dir)))
	if err != nil {
		t.Fatalf("server pair: %v", err)
	}
	clientPair, err := certs.LoadKeyPair(f("client.crt"), f("client.key"), nil)
	if err != nil {
		t.Fatalf("client pair: %v", err)
	}
	for name, pair := range map[string]tls.Certificate{"server": serverPair, "client": clientPair} {
		usage := map[string]x509.ExtKeyUsage{"server": x509.ExtKeyUsageServerAuth, "client": x509.ExtKeyUsageClientAuth}[name]
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("%s certificate does not verify for its usage: %v", name, err)
		}
	}

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok "+r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.Listener.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()
	url := "https://localhost:" + strings.Split(ln.Addr().String(), ":")[1] + "/test.log"

	post := func(pair *tls.Certificate) (string, error) {
		cfg := &tls.Config{RootCAs: pool}
		if pair != nil {
			cfg.Certificates = []tls.Certificate{*pair}
		}
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Post(url, "application/json", strings.NewReader(`{}`))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	body, err := post(&clientPair)
	if err != nil || body != "ok teleport-event-handler" {
		t.Errorf("mTLS with the generated client cert: body %q, err %v", body, err)
	}

	foreignDir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: foreignDir}); err != nil {
		t.Fatal(err)
	}
	foreign, err := certs.LoadKeyPair(filepath.Join(foreignDir, "client.crt"), filepath.Join(foreignDir, "client.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := post(&foreign); err == nil {
		t.Errorf("client cert from another configure run was accepted: %q", body)
	}
	if body, err := post(nil); err == nil {
		t.Errorf("request without a client cert was accepted: %q", body)
	}
}

func TestPassphraseFromStdin(t *testing.T) {
	dir := t.TempDir()
	secret := `pipe "d" #{pass} \ word`
	res, summary, err := run(t, Options{OutDir: dir, Stdin: strings.NewReader(secret + "\n")})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !res.PassphraseFromStdin {
		t.Error("PassphraseFromStdin is false")
	}
	if got := fluentPassphrase(t, dir); got != secret {
		t.Errorf("fluent.conf passphrase %q, want %q", got, secret)
	}
	if !strings.Contains(read(t, filepath.Join(dir, FluentConfFile)), `\#{pass}`) {
		t.Error(`fluent.conf does not escape "#{" (Fluentd would run it as Ruby)`)
	}
	if strings.Contains(summary, "pipe") {
		t.Errorf("summary shows the passphrase:\n%s", summary)
	}
	if _, err := certs.ParseKeyPEM([]byte(read(t, filepath.Join(dir, "server.key"))), []byte(secret)); err != nil {
		t.Errorf("server.key with the stdin passphrase: %v", err)
	}

	t.Run("terminal stdin is not read", func(t *testing.T) {
		dir := t.TempDir()
		res, _, err := run(t, Options{OutDir: dir, Stdin: strings.NewReader("typed\n"), StdinIsTerminal: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.PassphraseFromStdin || fluentPassphrase(t, dir) == "typed" {
			t.Error("read the passphrase from a terminal stdin; want a generated one")
		}
	})
	for name, in := range map[string]string{"empty": "", "newline only": "\n", "inner newline": "a\nb\n"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, _, err := run(t, Options{OutDir: dir, Stdin: strings.NewReader(in)})
			if err == nil || !strings.Contains(err.Error(), "stdin") {
				t.Fatalf("err %v, want an error about stdin", err)
			}
			if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
				t.Errorf("%d files written despite the error (%v)", len(entries), err)
			}
		})
	}
}

func TestRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	existing := map[string]string{"ca.crt": "mine", FluentConfFile: "my fluent.conf"}
	for n, c := range existing {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, summary, err := run(t, Options{OutDir: dir})
	if err == nil {
		t.Fatal("Run overwrote existing files")
	}
	for n := range existing {
		if !strings.Contains(err.Error(), filepath.Join(dir, n)) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
	if strings.Contains(err.Error(), "server.key") {
		t.Errorf("error %q names a file that does not exist", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(existing) || summary != "" {
		t.Errorf("after refusal: %d files (want %d), summary %q", len(entries), len(existing), summary)
	}
	for n, c := range existing {
		if got := read(t, filepath.Join(dir, n)); got != c {
			t.Errorf("%s changed to %q", n, got)
		}
	}

	if _, _, err := run(t, Options{OutDir: dir, Force: true}); err != nil {
		t.Fatalf("Run with Force: %v", err)
	}
	if got := read(t, filepath.Join(dir, "ca.crt")); !strings.HasPrefix(got, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("ca.crt not overwritten with Force: %q", got)
	}
	if fi, err := os.Stat(filepath.Join(dir, FluentConfFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("fluent.conf after Force: %v, %v", fi, err)
	}
}

func TestKeyTypesAndLengths(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		bits int
	}{
		{"ecdsa", Options{KeyType: certs.KeyECDSA}, 0},
		{"rsa 4096", Options{KeyType: certs.KeyRSA, RSABits: 4096}, 4096},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.bits == 4096 && testing.Short() {
				t.Skip("RSA 4096 key generation is slow")
			}
			c.opts.OutDir = t.TempDir()
			if _, _, err := run(t, c.opts); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"ca", "client"} {
				k, err := certs.ParseKeyPEM([]byte(read(t, filepath.Join(c.opts.OutDir, n+".key"))), nil)
				if err != nil {
					t.Fatal(err)
				}
				switch k := k.(type) {
				case *ecdsa.PrivateKey:
					if c.bits != 0 {
						t.Errorf("%s.key is ECDSA, want RSA", n)
					}
				case *rsa.PrivateKey:
					if k.N.BitLen() != c.bits {
						t.Errorf("%s.key has %d bits, want %d", n, k.N.BitLen(), c.bits)
					}
				}
			}
		})
	}
}

func TestBadOptions(t *testing.T) {
	cases := []struct {
		opts Options
		want string
	}{
		{Options{}, "output directory"},
		{Options{OutDir: "x", KeyType: "dsa"}, `"dsa"`},
		{Options{OutDir: "x", KeyType: certs.KeyRSA, RSABits: 1024}, "1024"},
		{Options{OutDir: "x", TTL: 1}, "TTL"},
		{Options{OutDir: "x", CAName: "../ca"}, `"../ca"`},
		{Options{OutDir: "x", ServerName: "client"}, "must differ"},
	}
	for _, c := range cases {
		_, err := Run(context.Background(), c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want it to contain %q", c.opts, err, c.want)
		}
	}
}

func TestTOMLAndEncryptedClientKey(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir, TeleportAddr: "proxy.example.com:443", EncryptClientKey: true,
		DNSNames: []string{"fluentd.internal"}, IPs: []net.IP{net.ParseIP("10.0.0.5")}}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Storage string
		Forward struct {
			Fluentd map[string]string
		}
		Teleport map[string]string
		NATS     map[string]any `toml:"nats"`
	}
	if err := toml.Unmarshal([]byte(read(t, filepath.Join(dir, TOMLFile))), &doc); err != nil {
		t.Fatalf("TOML: %v", err)
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	wantFluentd := map[string]string{
		"ca": f("ca.crt"), "cert": f("client.crt"), "key": f("client.key"), "key-passphrase-file": f("client.key.pass"),
		"url": "https://fluentd.internal:8888/test.log", "session-url": "https://fluentd.internal:8888/session",
	}
	for k, v := range wantFluentd {
		if doc.Forward.Fluentd[k] != v {
			t.Errorf("[forward.fluentd] %s = %q, want %q", k, doc.Forward.Fluentd[k], v)
		}
	}
	if doc.Teleport["addr"] != "proxy.example.com:443" || doc.Teleport["identity"] != f("identity") {
		t.Errorf("[teleport] %v", doc.Teleport)
	}
	if doc.NATS["url"] != "" || doc.NATS["listen"] != "127.0.0.1:4222" {
		t.Errorf("[nats] %v, want url \"\" (embedded) and listen 127.0.0.1:4222", doc.NATS)
	}
	if doc.Storage != f("storage") {
		t.Errorf("storage %q", doc.Storage)
	}

	fi, err := os.Stat(f("client.key.pass"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client.key.pass: %v %v", fi, err)
	}
	pass := strings.TrimSpace(read(t, f("client.key.pass")))
	if pass == fluentPassphrase(t, dir) {
		t.Error("client key uses the server key's passphrase")
	}
	pair, err := certs.LoadKeyPair(f("client.crt"), f("client.key"), []byte(pass))
	if err != nil {
		t.Fatalf("client pair with client.key.pass: %v", err)
	}
	if _, err := certs.LoadKeyPair(f("client.crt"), f("client.key"), nil); !errors.Is(err, certs.ErrPassphraseRequired) {
		t.Errorf("encrypted client.key without passphrase: err %v", err)
	}
	server, err := certs.LoadKeyPair(f("server.crt"), f("server.key"), []byte(fluentPassphrase(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	if got := server.Leaf.DNSNames; len(got) != 1 || got[0] != "fluentd.internal" || !server.Leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.5")) {
		t.Errorf("server SANs: %v %v", got, server.Leaf.IPAddresses)
	}
	if pair.Leaf.Subject.CommonName != DefaultClientCommonName {
		t.Errorf("client CN %q", pair.Leaf.Subject.CommonName)
	}
}

func TestFluentConf(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir}); err != nil {
		t.Fatal(err)
	}
	conf := read(t, filepath.Join(dir, FluentConfFile))
	for _, want := range []string{
		"@type http", "port 8888", "bind 127.0.0.1", "<transport tls>",
		`ca_path "` + filepath.Join(dir, "ca.crt") + `"`,
		`cert_path "` + filepath.Join(dir, "server.crt") + `"`,
		`private_key_path "` + filepath.Join(dir, "server.key") + `"`,
		"client_cert_auth true", "@type json", "json_parser oj", "time_type string",
		"time_format %Y-%m-%dT%H:%M:%S\n", "utc true",
		"<match test.log>", "<match session.*.log>", "<buffer>", "@type file",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("fluent.conf lacks %q", want)
		}
	}
	if strings.Count(conf, "<") != strings.Count(conf, "</")*2 {
		t.Errorf("fluent.conf sections do not balance:\n%s", conf)
	}
}
