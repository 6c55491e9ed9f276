package bus

import (
	"strconv"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// Role is what a client of the bus is allowed to do. The embedded server
// (StartEmbedded with Users) and the cluster configuration in
// deploy/nats/accounts.conf (AccountsConf, generated) both take their
// permissions from Permissions, so they cannot drift apart.
type Role string

// The roles of the pipeline.
const (
	// RoleIngest publishes audit.> and session.>, owns the streams and the
	// state bucket, and runs the lock watcher (its own consumer on
	// audit.user.login) and `ingest status`.
	RoleIngest Role = "ingest"
	// RoleSink reads through its two durable consumers, publishes only
	// deadletter.> and may read the state bucket's caught-up key.
	RoleSink Role = "fluentd-sink"
	// RoleReader reads audit.>, session.> and the dead letters through
	// consumers of its own and changes nothing else.
	RoleReader Role = "reader"
)

// Roles lists every role, in the order configure writes their credentials.
var Roles = []Role{RoleIngest, RoleSink, RoleReader}

// LockConsumer is the lock watcher's durable consumer on the audit stream
// (package lock's DefaultDurable). Only the ingest role may use it.
const LockConsumer = "teleport-event-bus-lock"

// ScanConsumerPrefix starts the names of the consumers ingest creates to
// scan its own streams (ScanTail): ingest-scan-1 … ingest-scan-N, N being
// ScanConsumerSlots. NATS permissions match whole subject tokens only, and
// a consumer's name is one token of its API subjects, so the ingest role
// is granted these exact names: it can create, read and delete its scans
// and no other consumer.
const ScanConsumerPrefix = "ingest-scan-"

// ScanConsumerSlots is how many scans of one stream may run at once.
const ScanConsumerSlots = 8

// ScanConsumerName is the name of scan slot i (1 … ScanConsumerSlots).
func ScanConsumerName(i int) string { return ScanConsumerPrefix + strconv.Itoa(i) }

// sinkStateKey is the one state bucket key the sink role may read: the
// caught-up mark it checks with exit-on-last-event.
const sinkStateKey = CaughtUpKey

// AuthNames are the stream, bucket and consumer names the permissions are
// computed from.
type AuthNames struct {
	AuditStream, SessionStream, DeadLetterStream, StateBucket string
	// SinkAuditConsumer and SinkSessionConsumer are the sink's durables.
	SinkAuditConsumer, SinkSessionConsumer string
	// LockConsumer is the lock watcher's durable.
	LockConsumer string
}

// NamesFor computes the names from the [nats] and [sink] sections, with the
// defaults for what they leave empty.
func NamesFor(nc config.NATSConfig, sc config.SinkConfig) AuthNames {
	nc = WithDefaults(nc)
	def := config.Default().Sink
	if sc.AuditConsumer == "" {
		sc.AuditConsumer = def.AuditConsumer
	}
	if sc.SessionConsumer == "" {
		sc.SessionConsumer = def.SessionConsumer
	}
	return AuthNames{
		AuditStream:         nc.AuditStream,
		SessionStream:       nc.SessionStream,
		DeadLetterStream:    DeadLetterStream(nc),
		StateBucket:         nc.StateBucket,
		SinkAuditConsumer:   sc.AuditConsumer,
		SinkSessionConsumer: sc.SessionConsumer,
		LockConsumer:        LockConsumer,
	}
}

// jsAPI is the JetStream API subject prefix.
const jsAPI = "$JS.API."

// Permissions is what role may publish and subscribe to, given the names.
// Clients receive JetStream API replies and publish acks on _INBOX.>; every
// JetStream operation is a publish to a $JS.API subject, so a role's
// publish list is the list of operations it may run. An unknown role gets
// nil.
func Permissions(role Role, n AuthNames) *server.Permissions {
	var pub, deny []string
	sub := []string{"_INBOX.>"}
	switch role {
	case RoleIngest:
		pub = ingestPublish(n)
	case RoleSink:
		pub = sinkPublish(n)
	case RoleReader:
		pub, deny = readerPublish(n)
		sub = append(sub, AuditPrefix+".>", SessionPrefix+".>", DeadLetterPrefix+".>")
	default:
		return nil
	}
	p := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
	if len(deny) > 0 {
		p.Publish.Deny = deny
	}
	return p
}

func ingestPublish(n AuthNames) []string {
	kv := "KV_" + n.StateBucket
	pub := []string{
		AuditPrefix + ".>",
		SessionPrefix + ".>",
		"$KV." + n.StateBucket + ".>",
		jsAPI + "INFO",
	}
	// The three streams and the bucket's stream: created and brought to
	// the configured limits by ingest, and read by `ingest status`.
	for _, s := range []string{n.AuditStream, n.SessionStream, n.DeadLetterStream, kv} {
		pub = append(pub,
			jsAPI+"STREAM.CREATE."+s,
			jsAPI+"STREAM.UPDATE."+s,
			jsAPI+"STREAM.INFO."+s)
	}
	for _, s := range []string{n.AuditStream, n.SessionStream, n.DeadLetterStream} {
		pub = append(pub, jsAPI+"CONSUMER.LIST."+s) // ingest status
	}
	pub = append(pub,
		// The state bucket: gets, key lists and watches (ordered
		// consumers), and the purge of old delete markers.
		jsAPI+"STREAM.PURGE."+kv,
		jsAPI+"STREAM.MSG.GET."+kv,
		jsAPI+"DIRECT.GET."+kv,
		jsAPI+"DIRECT.GET."+kv+".>",
		jsAPI+"CONSUMER.CREATE."+kv,
		jsAPI+"CONSUMER.CREATE."+kv+".>",
		jsAPI+"CONSUMER.DELETE."+kv+".>",
		jsAPI+"CONSUMER.INFO."+kv+".>",
		"$JS.FC."+kv+".>",
	)
	// Ingest reads the ids its own streams hold (ScanTail: `ingest
	// recover`, a publish retry, a restart) through consumers of the scan
	// names only: it cannot create, update, pull from or delete any other
	// consumer of these streams.
	for _, s := range []string{n.AuditStream, n.SessionStream} {
		for i := 1; i <= ScanConsumerSlots; i++ {
			at := s + "." + ScanConsumerName(i)
			pub = append(pub,
				jsAPI+"CONSUMER.CREATE."+at,
				jsAPI+"CONSUMER.MSG.NEXT."+at,
				jsAPI+"CONSUMER.DELETE."+at)
		}
	}
	// The lock watcher's durable consumer on audit.user.login.
	return append(pub, ownConsumer(n.AuditStream, n.LockConsumer)...)
}

func sinkPublish(n AuthNames) []string {
	kv := "KV_" + n.StateBucket
	pub := []string{
		DeadLetterPrefix + ".>",
		jsAPI + "INFO",
	}
	// The sink may start before ingest, so it may create a missing stream;
	// creating one that exists changes nothing (the same configuration) or
	// is refused (another one). It may not update, purge or delete one.
	for _, s := range []string{n.AuditStream, n.SessionStream, n.DeadLetterStream} {
		pub = append(pub, jsAPI+"STREAM.CREATE."+s, jsAPI+"STREAM.INFO."+s)
	}
	pub = append(pub, ownConsumer(n.AuditStream, n.SinkAuditConsumer)...)
	pub = append(pub, ownConsumer(n.SessionStream, n.SinkSessionConsumer)...)
	// Three keys of the state bucket: binding the bucket reads its
	// stream's info, a Get is a direct get of the key's subject and a Put
	// a publish to it. It reads caught-up, and reads and writes the record
	// of each of its consumers (SinkConsumerKey).
	pub = append(pub,
		jsAPI+"STREAM.INFO."+kv,
		jsAPI+"DIRECT.GET."+kv+".$KV."+n.StateBucket+"."+sinkStateKey,
	)
	for _, c := range []string{n.SinkAuditConsumer, n.SinkSessionConsumer} {
		key := "$KV." + n.StateBucket + "." + SinkConsumerKey(c)
		pub = append(pub, key, jsAPI+"DIRECT.GET."+kv+"."+key)
	}
	return pub
}

// ownConsumer is what a role needs for one durable pull consumer it owns:
// create or update it (with or without a filter in the subject), read its
// info, pull and acknowledge.
func ownConsumer(stream, durable string) []string {
	return []string{
		jsAPI + "CONSUMER.CREATE." + stream + "." + durable,
		jsAPI + "CONSUMER.CREATE." + stream + "." + durable + ".>",
		jsAPI + "CONSUMER.DURABLE.CREATE." + stream + "." + durable,
		jsAPI + "CONSUMER.INFO." + stream + "." + durable,
		jsAPI + "CONSUMER.MSG.NEXT." + stream + "." + durable,
		"$JS.ACK." + stream + "." + durable + ".>",
	}
}

func readerPublish(n AuthNames) (allow, deny []string) {
	allow = []string{jsAPI + "INFO", jsAPI + "STREAM.NAMES", jsAPI + "STREAM.LIST"}
	// The dead letters are audit events Fluentd refused: reading them is
	// how they are inspected and replayed (docs/troubleshooting.md).
	for _, s := range []string{n.AuditStream, n.SessionStream, n.DeadLetterStream} {
		allow = append(allow,
			jsAPI+"STREAM.INFO."+s,
			jsAPI+"STREAM.MSG.GET."+s,
			jsAPI+"DIRECT.GET."+s,
			jsAPI+"DIRECT.GET."+s+".>",
			jsAPI+"CONSUMER.CREATE."+s,
			jsAPI+"CONSUMER.CREATE."+s+".>",
			jsAPI+"CONSUMER.DURABLE.CREATE."+s+".>",
			jsAPI+"CONSUMER.INFO."+s+".>",
			jsAPI+"CONSUMER.NAMES."+s,
			jsAPI+"CONSUMER.LIST."+s,
			jsAPI+"CONSUMER.DELETE."+s+".>",
			jsAPI+"CONSUMER.MSG.NEXT."+s+".>",
			"$JS.ACK."+s+".>",
			"$JS.FC."+s+".>",
		)
	}
	// Consumers of its own only: never the sink's, the lock watcher's or
	// ingest's scans.
	others := []string{n.SinkAuditConsumer, n.SinkSessionConsumer, n.LockConsumer}
	for i := 1; i <= ScanConsumerSlots; i++ {
		others = append(others, ScanConsumerName(i))
	}
	for _, c := range others {
		deny = append(deny,
			jsAPI+"CONSUMER.*.*."+c,
			jsAPI+"CONSUMER.*.*."+c+".>",
			jsAPI+"CONSUMER.*.*.*."+c,
			"$JS.ACK.*."+c+".>",
		)
	}
	return allow, deny
}
