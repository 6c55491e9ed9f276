package bus

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging/logtest"
)

func TestConnectToken(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{Token: "s3cret-token"})
	url := b.Embedded.ClientURL()

	nc, err := Connect(testCtx(t), config.NATSConfig{URL: url, Token: "s3cret-token"}, "token-client", zerolog.Nop())
	if err != nil {
		t.Fatalf("connect with the token: %v", err)
	}
	nc.Close()

	var logs bytes.Buffer
	_, err = Connect(testCtx(t), config.NATSConfig{URL: url, Token: "wrong-token"}, "bad-client", zerolog.New(&logs))
	assertRefused(t, err, url)
	_, err = Connect(testCtx(t), config.NATSConfig{URL: url}, "anon-client", zerolog.New(&logs))
	assertRefused(t, err, url)
	if strings.Contains(logs.String(), "token") {
		t.Errorf("log mentions the token: %s", logs.String())
	}
}

func TestConnectUserPassword(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{User: "ingest", Password: "pa55word"})
	url := b.Embedded.ClientURL()

	nc, err := Connect(testCtx(t), config.NATSConfig{URL: url, User: "ingest", Password: "pa55word"}, "user-client", zerolog.Nop())
	if err != nil {
		t.Fatalf("connect with user and password: %v", err)
	}
	nc.Close()

	_, err = Connect(testCtx(t), config.NATSConfig{URL: url, User: "ingest", Password: "wrong"}, "bad-client", zerolog.Nop())
	assertRefused(t, err, url)
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error shows the password: %v", err)
	}
	_, err = Connect(testCtx(t), config.NATSConfig{URL: url}, "anon-client", zerolog.Nop())
	assertRefused(t, err, url)
}

func assertRefused(t *testing.T, err error, url string) {
	t.Helper()
	if err == nil {
		t.Fatal("connect with wrong or no credentials succeeded")
	}
	if !strings.Contains(err.Error(), "NATS refused the credentials") || !strings.Contains(err.Error(), url) {
		t.Fatalf("error %q should say NATS refused the credentials and name %s", err, url)
	}
}

func TestConnectUnreachableNamesURL(t *testing.T) {
	// Port 1 on loopback has no listener.
	_, err := Connect(testCtx(t), config.NATSConfig{URL: "nats://u:hunter2@127.0.0.1:1"}, "x", zerolog.Nop())
	if err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %q should name the URL without its password", err)
	}
}

func TestConnectEmptyURLUsesListen(t *testing.T) {
	b := openTestBus(t, config.NATSConfig{})
	// Another process (the sink) finds the embedded server from [nats] listen.
	listen := strings.TrimPrefix(b.Embedded.ClientURL(), "nats://")
	other, err := Open(testCtx(t), config.NATSConfig{Listen: listen}, t.TempDir(), "sink", zerolog.Nop(), false)
	if err != nil {
		t.Fatalf("Open without URL and without embed: %v", err)
	}
	defer other.Close()
	if other.Embedded != nil {
		t.Fatal("Open without embed started a server")
	}
	if got := other.Conn.ConnectedUrl(); got != b.Embedded.ClientURL() {
		t.Fatalf("connected to %q, want %q", got, b.Embedded.ClientURL())
	}
}

func TestServerList(t *testing.T) {
	got := serverList(config.NATSConfig{URL: " nats://a:4222, ,nats://b:4222 "})
	if strings.Join(got, "|") != "nats://a:4222|nats://b:4222" {
		t.Errorf("serverList = %q", got)
	}
	if got := redactURLs([]string{"nats://u:p@h:1", "nats://tok@h:2", "nats://h:3"}); got != "nats://u:xxxxx@h:1,nats://xxxxx@h:2,nats://h:3" {
		t.Errorf("redactURLs = %q", got)
	}
}

func TestSecretsNotLogged(t *testing.T) {
	var logs logtest.Buffer
	log := zerolog.New(&logs).Level(zerolog.DebugLevel)
	for _, cfg := range []config.NATSConfig{
		{Listen: "127.0.0.1:0", Token: "s3cret-token"},
		{Listen: "127.0.0.1:0", User: "ingest", Password: "s3cret-pass"},
	} {
		b, err := Open(testCtx(t), cfg, t.TempDir(), "secret-test", log, true)
		if err != nil {
			t.Fatal(err)
		}
		bad := cfg
		bad.URL = b.Embedded.ClientURL()
		bad.Token, bad.Password = "s3cret-wrong", "s3cret-wrong"
		if _, err := Connect(testCtx(t), bad, "bad", log); err == nil {
			t.Fatal("wrong credentials accepted")
		}
		b.Close()
	}
	out := logs.String()
	if !strings.Contains(out, "nats-server") {
		t.Fatalf("no server log lines at debug level: %s", out)
	}
	if strings.Contains(out, "s3cret") {
		t.Fatalf("a secret reached the log: %s", out)
	}
}

func TestConnectOptionErrors(t *testing.T) {
	_, err := Connect(testCtx(t), config.NATSConfig{URL: "nats://127.0.0.1:1", NKey: "/nonexistent/seed.nk"}, "x", zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/seed.nk") {
		t.Errorf("missing nkey seed file: %v", err)
	}
	_, err = Connect(testCtx(t), config.NATSConfig{URL: "nats://127.0.0.1:1", Cert: "c.pem"}, "x", zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "cert and key") {
		t.Errorf("cert without key: %v", err)
	}
}
