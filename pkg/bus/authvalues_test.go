package bus

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// TestAuthorizationValuesLoadInNATSServer: the authorization block, written
// as a configuration file, is read by nats-server's own parser into one
// NKey user per role with exactly that role's Permissions.
func TestAuthorizationValuesLoadInNATSServer(t *testing.T) {
	n := NamesFor(config.Default().NATS, config.Default().Sink)
	var users []User
	for _, r := range Roles {
		_, pub, err := NewUserKey()
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, User{Role: r, NKey: pub})
	}
	// The NATS chart writes its config as JSON without HTML escaping
	// (toPrettyRawJson): nats-server takes no \u escapes, so ">" must stay.
	var conf bytes.Buffer
	enc := json.NewEncoder(&conf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"authorization": AuthorizationValues(users, n)}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, conf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the authorization: %v", err)
	}
	if len(opts.Nkeys) != len(users) {
		t.Fatalf("nats-server read %d NKey users, want %d", len(opts.Nkeys), len(users))
	}
	for i, u := range users {
		got := opts.Nkeys[i]
		if got.Nkey != u.NKey {
			t.Errorf("user %d: nkey %s, want %s (%s)", i, got.Nkey, u.NKey, u.Role)
		}
		want := Permissions(u.Role, n)
		if !reflect.DeepEqual(got.Permissions.Publish, want.Publish) || !reflect.DeepEqual(got.Permissions.Subscribe, want.Subscribe) {
			t.Errorf("%s: nats-server read publish %+v subscribe %+v, want publish %+v subscribe %+v",
				u.Role, got.Permissions.Publish, got.Permissions.Subscribe, want.Publish, want.Subscribe)
		}
	}
}
