package bus_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// roleKeys writes a seed file (0600) per role and a users file naming their
// public keys, as configure does, and returns the seed paths by role and
// the users file.
func roleKeys(t *testing.T, dir string) (map[bus.Role]string, string) {
	t.Helper()
	seeds := map[bus.Role]string{}
	var users []bus.User
	for _, r := range bus.Roles {
		seed, pub, err := bus.NewUserKey()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "nats-"+string(r)+".nk")
		if err := os.WriteFile(p, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		seeds[r] = p
		users = append(users, bus.User{Role: r, NKey: pub})
	}
	data, err := bus.RenderUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "nats-users.toml")
	if err := os.WriteFile(usersFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return seeds, usersFile
}

// closedBus starts the embedded server with the users file, as ingest
// does, creates the streams and the state bucket and publishes n audit
// events; it returns the bus (ingest's connection) and the seeds.
func closedBus(t *testing.T, n int) (*bus.Bus, map[bus.Role]string) {
	t.Helper()
	dir := t.TempDir()
	seeds, users := roleKeys(t, dir)
	cfg := config.Default().NATS
	cfg.Listen = "127.0.0.1:0"
	cfg.Users = users
	cfg.NKey = seeds[bus.RoleIngest]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	b, err := bus.Open(ctx, cfg, filepath.Join(dir, "storage"), "ingest", zerolog.Nop(), true)
	if err != nil {
		t.Fatalf("open the closed embedded bus as ingest: %v", err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatalf("ingest: ensure streams: %v", err)
	}
	if _, err := b.State(ctx); err != nil {
		t.Fatalf("ingest: state bucket: %v", err)
	}
	for i := range n {
		if _, err := b.JS.Publish(ctx, bus.AuditSubject("user.login"), []byte(fmt.Sprintf(`{"event":"user.login","uid":"ev-%d"}`, i))); err != nil {
			t.Fatalf("ingest: publish: %v", err)
		}
		if _, err := b.JS.Publish(ctx, bus.SessionSubject("sid-1"), []byte(`{"event":"print"}`)); err != nil {
			t.Fatalf("ingest: publish session event: %v", err)
		}
	}
	return b, seeds
}

// TestEmbeddedRoles runs the role checks against the embedded server
// started with a users file: the same permissions as the cluster's.
func TestEmbeddedRoles(t *testing.T) {
	b, seeds := closedBus(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	harness.CheckRoles(ctx, t, harness.RoleClients{
		Config: func(role bus.Role) config.NATSConfig {
			c := config.Default().NATS
			c.URL = b.Embedded.ClientURL()
			c.NKey = seeds[role]
			return c
		},
	})
}

// TestEmbeddedIngestUsesItsOwnConsumers: the ingest role runs the lock
// watcher's consumer and reads the stream and consumer lists of `ingest
// status`, and cannot delete a stream either.
func TestEmbeddedIngestRole(t *testing.T) {
	b, _ := closedBus(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := b.Consumer(ctx, b.Cfg.AuditStream, bus.LockConsumer, []string{bus.AuditSubject("user.login")}, 0, 64, 0)
	if err != nil {
		t.Fatalf("ingest: the lock watcher's consumer: %v", err)
	}
	batch, err := c.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ingest: ack: %v", err)
		}
		got++
	}
	if got != 3 {
		t.Errorf("ingest: the lock consumer read %d login events, want 3", got)
	}
	infos, err := b.StreamInfos(ctx)
	if err != nil || len(infos) != 3 {
		t.Fatalf("ingest status: stream infos: %d, %v", len(infos), err)
	}
	for _, s := range infos {
		if _, err := b.ConsumerInfos(ctx, s.Config.Name); err != nil {
			t.Errorf("ingest status: consumers of %s: %v", s.Config.Name, err)
		}
	}
	kv, err := b.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := kv.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(-1)); err != nil {
		t.Errorf("ingest: purge the state bucket's delete markers: %v", err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if err := b.JS.DeleteStream(dctx, b.Cfg.AuditStream); err == nil {
		t.Error("ingest deleted the audit stream")
	}
}

// TestEmbeddedCredentialErrors: a seed file open to others, a missing one,
// and a seed whose key is not in the users file are each refused with a
// message naming the file and the fix.
func TestEmbeddedCredentialErrors(t *testing.T) {
	b, seeds := closedBus(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := b.Embedded.ClientURL()
	connect := func(seed string) error {
		c := config.Default().NATS
		c.URL, c.NKey = url, seed
		nc, err := bus.Connect(ctx, c, "t", zerolog.Nop())
		if err == nil {
			nc.Close()
		}
		return err
	}

	loose := filepath.Join(t.TempDir(), "loose.nk")
	data, err := os.ReadFile(seeds[bus.RoleReader])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loose, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("NATS nkey seed file %q is open to group or others (mode 0644), it must be readable by its owner only: run chmod 600 %s", loose, loose)
	if err := connect(loose); err == nil || err.Error() != want {
		t.Errorf("world-readable seed: got %v\nwant %s", err, want)
	}

	missing := filepath.Join(t.TempDir(), "missing.nk")
	if err := connect(missing); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("NATS nkey seed file %q does not exist", missing)) {
		t.Errorf("missing seed: %v", err)
	}

	stranger, _, err := bus.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(t.TempDir(), "unknown.nk")
	if err := os.WriteFile(unknown, stranger, 0o600); err != nil {
		t.Fatal(err)
	}
	err = connect(unknown)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("NATS refused the credentials of nkey seed file %q", unknown)) {
		t.Errorf("unknown key: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), strings.TrimSpace(string(stranger))) {
		t.Error("the error shows the seed")
	}
}

// TestLoadUsersErrors: a users file that would let nobody or anybody in is
// refused by name.
func TestLoadUsersErrors(t *testing.T) {
	dir := t.TempDir()
	seed, pub, err := bus.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"empty":       {"", 0o600, "lists no [[user]]"},
		"bad role":    {"[[user]]\nrole = \"admin\"\nnkey = \"" + pub + "\"\n", 0o600, `role "admin" is not one of`},
		"seed pasted": {"[[user]]\nrole = \"reader\"\nnkey = \"" + strings.TrimSpace(string(seed)) + "\"\n", 0o600, "is not a public user NKey"},
		"writable":    {"[[user]]\nrole = \"reader\"\nnkey = \"" + pub + "\"\n", 0o666, "is writable by group or others (mode 0666): run chmod 600"},
	}
	for name, c := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".toml")
		if err := os.WriteFile(p, []byte(c.body), c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		_, err := bus.LoadUsers(p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimSpace(string(seed))) {
			t.Errorf("%s: the error shows the seed", name)
		}
	}
}

// TestDeployNATSIsUpToDate: deploy/nats is ClusterFiles of the template
// cluster, file by file and nothing else, so the cluster, configure
// --nats-cluster and the embedded server enforce the same permissions.
func TestDeployNATSIsUpToDate(t *testing.T) {
	spec := bus.TemplateCluster(bus.NamesFor(config.Default().NATS, config.Default().Sink))
	want := map[string]bool{}
	for _, f := range bus.ClusterFiles(spec) {
		want[f.Name] = true
		got, err := os.ReadFile(filepath.Join("../../deploy/nats", f.Name))
		if err != nil {
			t.Errorf("read deploy/nats/%s: %v (regenerate: go generate ./pkg/bus)", f.Name, err)
			continue
		}
		if string(got) != string(f.Data) {
			t.Errorf("deploy/nats/%s differs from bus.ClusterFiles; regenerate it: go generate ./pkg/bus", f.Name)
		}
	}
	entries, err := os.ReadDir("../../deploy/nats")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("deploy/nats/%s is not generated by bus.ClusterFiles: remove it", e.Name())
		}
	}
	for _, f := range []string{"accounts.conf", "nats-1.conf"} {
		data, err := os.ReadFile(filepath.Join("../../deploy/nats", f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.ToLower(string(data)), "password") {
			t.Errorf("deploy/nats/%s mentions a password: the cluster's users are NKeys only", f)
		}
	}
}

// TestConfFilesGrantWhatPermissionsSays parses deploy/nats/accounts.conf
// (with the public keys in the environment, as its servers run) and an
// NKeyAuthorization block with nats-server's own parser and checks that
// every user gets exactly its role's Permissions: the cluster, a
// standalone server and the embedded one enforce the same roles.
func TestConfFilesGrantWhatPermissionsSays(t *testing.T) {
	names := bus.NamesFor(config.Default().NATS, config.Default().Sink)
	dir := t.TempDir()
	var users []bus.User
	for _, r := range bus.Roles {
		_, pub, err := bus.NewUserKey()
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, bus.User{Role: r, NKey: pub})
	}
	for i, u := range bus.NKeyEnvUsers() {
		t.Setenv(strings.TrimPrefix(u.NKey, "$"), users[i].NKey)
	}
	accounts, err := os.ReadFile("../../deploy/nats/accounts.conf")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"accounts.conf": accounts, "nkeys.conf": bus.NKeyAuthorization(users, names)} {
		opts := parseConf(t, filepath.Join(dir, name), data)
		if len(opts.Nkeys) != len(users) || len(opts.Users) != 0 {
			t.Fatalf("%s has %d NKey users and %d others, want %d and none", name, len(opts.Nkeys), len(opts.Users), len(users))
		}
		for i, u := range opts.Nkeys {
			if u.Nkey != users[i].NKey {
				t.Errorf("%s user %d: nkey %s, want %s", name, i, u.Nkey, users[i].NKey)
			}
			checkPerms(t, name+" user "+string(users[i].Role), u.Permissions, bus.Permissions(users[i].Role, names))
		}
	}
}

func parseConf(t *testing.T, path string, data []byte) *server.Options {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server cannot parse %s: %v", filepath.Base(path), err)
	}
	return opts
}

func checkPerms(t *testing.T, who string, got, want *server.Permissions) {
	t.Helper()
	if got == nil || want == nil {
		t.Fatalf("%s: permissions %v, want %v", who, got, want)
	}
	same := func(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }
	if !same(got.Publish.Allow, want.Publish.Allow) || !same(got.Publish.Deny, want.Publish.Deny) ||
		!same(got.Subscribe.Allow, want.Subscribe.Allow) {
		t.Errorf("%s: the file grants\n%+v %+v\nbus.Permissions says\n%+v %+v", who, *got.Publish, *got.Subscribe, *want.Publish, *want.Subscribe)
	}
}

// TestPermissionsTable: docs/bus-contract.md's table of roles and
// permissions lists exactly what Permissions grants each role (with the
// names as placeholders), so no permission goes unjustified.
func TestPermissionsTable(t *testing.T) {
	data, err := os.ReadFile("../../docs/bus-contract.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	start := strings.Index(doc, "## Roles and permissions")
	if start < 0 {
		t.Fatal("docs/bus-contract.md has no \"## Roles and permissions\" section")
	}
	n := bus.AuthNames{
		AuditStream: "<audit>", SessionStream: "<sessions>", DeadLetterStream: "<deadletter>", StateBucket: "<bucket>",
		SinkAuditConsumer: "<sink-audit>", SinkSessionConsumer: "<sink-sessions>", LockConsumer: "<lock>",
	}
	norm := strings.NewReplacer("<audit>", "<stream>", "<sessions>", "<stream>", "<deadletter>", "<stream>",
		"<sink-audit>", "<sink-consumer>", "<sink-sessions>", "<sink-consumer>")
	scan := regexp.MustCompile(`ingest-scan-[0-9]+`)
	set := func(subjects []string) map[string]bool {
		out := map[string]bool{}
		for _, s := range subjects {
			if s != "_INBOX.>" {
				out[scan.ReplaceAllString(norm.Replace(s), "ingest-scan-<n>")] = true
			}
		}
		return out
	}
	tick := regexp.MustCompile("`([^`]+)`")
	for _, role := range bus.Roles {
		p := bus.Permissions(role, n)
		want := map[string]map[string]bool{"allow": set(p.Publish.Allow), "deny": set(p.Publish.Deny), "subscribe": set(p.Subscribe.Allow)}
		got := map[string]map[string]bool{"allow": {}, "deny": {}, "subscribe": {}}
		for _, line := range strings.Split(doc[start:], "\n") {
			cells := strings.Split(line, "|")
			if len(cells) < 4 || strings.TrimSpace(cells[1]) != string(role) {
				continue
			}
			kind := "allow"
			switch c := strings.TrimSpace(cells[2]); {
			case strings.HasPrefix(c, "denied:"):
				kind = "deny"
			case strings.HasPrefix(c, "subscribe:"):
				kind = "subscribe"
			}
			for _, m := range tick.FindAllStringSubmatch(cells[2], -1) {
				got[kind][m[1]] = true
			}
		}
		for kind := range want {
			for s := range want[kind] {
				if !got[kind][s] {
					t.Errorf("%s %s %s: granted by Permissions, missing from the table in docs/bus-contract.md", role, kind, s)
				}
			}
			for s := range got[kind] {
				if !want[kind][s] {
					t.Errorf("%s %s %s: in the table of docs/bus-contract.md, not granted by Permissions", role, kind, s)
				}
			}
		}
	}
}
