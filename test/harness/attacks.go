package harness

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// victim is a consumer one role owns, which every other role attacks.
type victim struct {
	owner        bus.Role
	stream, name string
	before       jetstream.ConsumerConfig
	ownerClient  *roleClient
}

// attack is one raw JetStream API request a role must not be able to make:
// the subject and a body that would do harm if the server took it.
type attack struct {
	what, subject string
	body          []byte
}

// consumerAttacks are the ways to harm a consumer of another role: delete
// it, update or re-point it (with and without a filter token in the
// subject, through the old durable-create subject), pull from it (stealing
// its messages), pause it or move its leader.
func consumerAttacks(v *victim) []attack {
	cfg := func(filter string) []byte {
		c := map[string]any{"durable_name": v.name, "name": v.name, "ack_policy": "explicit", "deliver_policy": "all", "filter_subject": filter}
		b, _ := json.Marshal(map[string]any{"stream_name": v.stream, "config": c})
		return b
	}
	api := "$JS.API.CONSUMER."
	at := v.stream + "." + v.name
	return []attack{
		{"delete " + v.name, api + "DELETE." + at, nil},
		{"update " + v.name, api + "CREATE." + at, cfg("audit.nothing")},
		{"re-point " + v.name + " with a filter", api + "CREATE." + at + ".audit.nothing", cfg("audit.nothing")},
		{"reset " + v.name + " (durable create)", api + "DURABLE.CREATE." + at, cfg("")},
		{"pull from " + v.name, api + "MSG.NEXT." + at, []byte(`{"batch":1,"no_wait":true}`)},
		{"pause " + v.name, api + "PAUSE." + at, []byte(`{"pause_until":"2099-01-01T00:00:00Z"}`)},
		{"step down the leader of " + v.name, api + "LEADER.STEPDOWN." + at, nil},
	}
}

// streamAttacks are the admin requests on a stream (or the bucket's
// stream) that no role may make: delete, purge, delete a message, move or
// remove its leader or a peer, snapshot and restore.
func streamAttacks(stream string) []attack {
	api := "$JS.API.STREAM."
	body := func(v map[string]any) []byte { b, _ := json.Marshal(v); return b }
	return []attack{
		{"delete stream " + stream, api + "DELETE." + stream, nil},
		{"purge stream " + stream, api + "PURGE." + stream, []byte(`{}`)},
		{"delete a message of " + stream, api + "MSG.DELETE." + stream, body(map[string]any{"seq": 1, "no_erase": true})},
		{"step down the leader of " + stream, api + "LEADER.STEPDOWN." + stream, nil},
		{"remove a peer of " + stream, api + "PEER.REMOVE." + stream, body(map[string]any{"peer": "nats-1"})},
		{"snapshot " + stream, api + "SNAPSHOT." + stream, body(map[string]any{"deliver_subject": "_INBOX.snapshot"})},
		{"restore " + stream, api + "RESTORE." + stream, body(map[string]any{"config": map[string]any{"name": stream}})},
	}
}

// changeStream is an update of a stream's limits that would drop events
// (keep one message); only ingest, the owner of the limits, may change
// them.
func changeStream(stream string) attack {
	b, _ := json.Marshal(map[string]any{"name": stream, "max_msgs": 1})
	return attack{"change the limits of " + stream, "$JS.API.STREAM.UPDATE." + stream, b}
}

// checkAttacks makes every attack of every role at once (each refused one
// costs refusedWait) and checks each was refused with a permissions
// violation.
func checkAttacks(ctx context.Context, t *testing.T, byRole map[bus.Role][]attack, clients map[bus.Role]*roleClient) {
	t.Helper()
	var wg sync.WaitGroup
	for role, attacks := range byRole {
		c := clients[role]
		for _, a := range attacks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.refused(ctx, t, a.what+" ("+a.subject+")", a.subject, func(ctx context.Context) error {
					_, err := c.b.Conn.RequestWithContext(ctx, a.subject, a.body)
					return err
				})
			}()
		}
	}
	wg.Wait()
}

// checkVictimsIntact checks, through ingest's consumer list (what `ingest
// status` shows), that each victim consumer still exists with the
// configuration its owner gave it.
func checkVictimsIntact(ctx context.Context, t *testing.T, ing *roleClient, victims []*victim) {
	t.Helper()
	for _, v := range victims {
		var info *jetstream.ConsumerInfo
		deadline := time.Now().Add(30 * time.Second)
		for info == nil && time.Now().Before(deadline) {
			infos, err := ing.b.ConsumerInfos(ctx, v.stream)
			if err != nil {
				t.Fatalf("ingest: list the consumers of %s: %v", v.stream, err)
			}
			for _, i := range infos.Infos {
				if i.Name == v.name {
					info = i
				}
			}
			if info == nil {
				time.Sleep(100 * time.Millisecond) // a cluster's list may lag a moment
			}
		}
		if info == nil {
			t.Errorf("%s's consumer %s on %s is gone after the attacks", v.owner, v.name, v.stream)
			continue
		}
		got := info.Config
		if got.FilterSubject != v.before.FilterSubject || got.DeliverPolicy != v.before.DeliverPolicy ||
			got.AckPolicy != v.before.AckPolicy || info.Paused {
			t.Errorf("%s's consumer %s on %s was changed by another role: filter %q, deliver %s, paused %v; before: filter %q, deliver %s",
				v.owner, v.name, v.stream, got.FilterSubject, got.DeliverPolicy, info.Paused, v.before.FilterSubject, v.before.DeliverPolicy)
		}
	}
}

// victimReader is the reader's consumer the other roles attack.
const victimReader = "roles-reader-victim"

// makeVictims makes a consumer of each role for the others to attack: the
// sink's audit durable, the lock watcher's durable and a scan consumer of
// ingest, a durable of the reader.
func makeVictims(ctx context.Context, t *testing.T, clients map[bus.Role]*roleClient, n bus.AuthNames) []*victim {
	t.Helper()
	explicit := func(name string) jetstream.ConsumerConfig {
		return jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy}
	}
	make1 := func(owner bus.Role, stream string, cfg jetstream.ConsumerConfig) *victim {
		t.Helper()
		c := clients[owner]
		var cons jetstream.Consumer
		var err error
		name := cfg.Durable
		if name == "" {
			// A scan consumer: ingest may create it, not look it up.
			name = cfg.Name
			cons, err = c.b.JS.CreateConsumer(ctx, stream, cfg)
		} else if cons, err = c.b.JS.Consumer(ctx, stream, name); err != nil {
			cons, err = c.b.JS.CreateOrUpdateConsumer(ctx, stream, cfg)
		}
		if err != nil {
			t.Fatalf("%s: create its consumer %s: %v", owner, name, err)
		}
		return &victim{owner: owner, stream: stream, name: name, before: cons.CachedInfo().Config, ownerClient: c}
	}
	lock := explicit(n.LockConsumer)
	lock.FilterSubject = bus.AuditSubject("user.login")
	return []*victim{
		make1(bus.RoleSink, n.AuditStream, explicit(n.SinkAuditConsumer)),
		make1(bus.RoleIngest, n.AuditStream, lock),
		make1(bus.RoleIngest, n.AuditStream, jetstream.ConsumerConfig{
			Name: bus.ScanConsumerName(bus.ScanConsumerSlots), AckPolicy: jetstream.AckNonePolicy, HeadersOnly: true,
			MemoryStorage: true, InactiveThreshold: 5 * time.Minute,
		}),
		make1(bus.RoleReader, n.AuditStream, explicit(victimReader)),
	}
}

// removeVictims deletes the victims the check made for itself (the scan
// consumer and the reader's); the sink's and the lock watcher's durables
// stay, as a running pipeline has them.
func removeVictims(ctx context.Context, t *testing.T, victims []*victim) {
	t.Helper()
	for _, v := range victims {
		if v.name != victimReader && v.name != bus.ScanConsumerName(bus.ScanConsumerSlots) {
			continue
		}
		if err := v.ownerClient.b.JS.DeleteConsumer(ctx, v.stream, v.name); err != nil {
			t.Errorf("%s: delete its own consumer %s: %v", v.owner, v.name, err)
		}
	}
}

// attacksOn lists, for each role, every attack on the consumers of the
// other roles and on the streams and the bucket.
func attacksOn(n bus.AuthNames, victims []*victim) map[bus.Role][]attack {
	streams := []string{n.AuditStream, n.SessionStream, n.DeadLetterStream, "KV_" + n.StateBucket}
	out := map[bus.Role][]attack{}
	for _, role := range bus.Roles {
		var as []attack
		for _, v := range victims {
			if v.owner != role {
				as = append(as, consumerAttacks(v)...)
			}
		}
		for _, s := range streams {
			for _, a := range streamAttacks(s) {
				// Ingest owns every key of the bucket (it may put and
				// purge any through $KV.<bucket>.>) and drops old delete
				// markers with a purge of the bucket's stream: the one
				// admin request it may make (docs/bus-contract.md).
				if role == bus.RoleIngest && a.subject == "$JS.API.STREAM.PURGE.KV_"+n.StateBucket {
					continue
				}
				as = append(as, a)
			}
			if role != bus.RoleIngest {
				as = append(as, changeStream(s))
			}
		}
		newStream, _ := json.Marshal(map[string]any{"name": "ROLES_EVIL", "subjects": []string{"_INBOX.>"}})
		as = append(as, attack{"create a stream of its own", "$JS.API.STREAM.CREATE.ROLES_EVIL", newStream})
		out[role] = as
	}
	return out
}
