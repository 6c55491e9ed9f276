package bus

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

//go:generate go run ./internal/genaccounts -o ../../deploy/nats/accounts.conf

// accountsRoles are the roles of deploy/nats/accounts.conf: the variable
// holding the role's permissions, the user name and the environment
// variable with its password.
var accountsRoles = []struct {
	role          Role
	variable, env string
	comment       string
}{
	{RoleIngest, "INGEST", "NATS_INGEST_PASSWORD",
		"ingest: publishes audit.> and session.>, creates and updates the streams\n# (audit, sessions, dead letters) and the state bucket, runs the lock\n# watcher's consumer and `ingest status`."},
	{RoleSink, "SINK", "NATS_SINK_PASSWORD",
		"fluentd-sink: reads through its two durable consumers (create/update,\n# info, pull, ack), publishes dead letters, may create a missing stream\n# (never change one) and read the state bucket's caught-up key only.\n# It cannot publish events."},
	{RoleReader, "READER", "NATS_READER_PASSWORD",
		"Other consumers (SIEM feed, archiver, `nats sub`): read the audit,\n# session and dead-letter streams through consumers of their own,\n# live-subscribe to audit.>, session.> and deadletter.>, and publish\n# nothing onto the bus. They cannot touch the sink's or the lock\n# watcher's consumers, or the state bucket."},
}

// AccountsConf renders deploy/nats/accounts.conf, the cluster's users and
// their permissions, from Permissions with the default names: the cluster
// and the embedded server enforce the same roles. Passwords come from the
// environment, never from the file.
func AccountsConf() []byte {
	n := NamesFor(config.Default().NATS, config.Default().Sink)
	var b bytes.Buffer
	fmt.Fprintf(&b, `# Generated from pkg/bus (Permissions) by go generate ./pkg/bus: do not
# edit; the embedded server enforces the same roles.
#
# Users and what each may do. They share one account, because JetStream
# keeps streams, consumers and KV buckets per account and every role works
# on the same streams. Passwords come from the environment, never from this
# file. The names below are the defaults of
#   [nats] audit-stream    %s
#   [nats] session-stream  %s
#   [nats] state-bucket    %s (stream KV_%s)
#   [sink] audit-consumer and session-consumer
# If you change them there, change them here too.
#
# Every client receives JetStream API replies and publish acks on _INBOX.>.

authorization {
`, n.AuditStream, n.SessionStream, n.StateBucket, n.StateBucket)
	writeRoles(&b, n)
	b.WriteString("\n  users = [\n")
	for _, r := range accountsRoles {
		fmt.Fprintf(&b, "    { user: %s, password: $%s, permissions: $%s }\n", r.role, r.env, r.variable)
	}
	b.WriteString("  ]\n}\n")
	return b.Bytes()
}

// NKeyAuthorization renders an authorization block for a nats-server of
// your own (nats-server -c) that admits the users of a users file with the
// permissions of their roles, as the embedded server does: the same
// configure credentials then work against it.
func NKeyAuthorization(users []User, n AuthNames) []byte {
	var b bytes.Buffer
	b.WriteString("authorization {\n")
	writeRoles(&b, n)
	b.WriteString("\n  users = [\n")
	for _, u := range users {
		for _, r := range accountsRoles {
			if r.role == u.Role {
				fmt.Fprintf(&b, "    { nkey: %s, permissions: $%s }\n", u.NKey, r.variable)
			}
		}
	}
	b.WriteString("  ]\n}\n")
	return b.Bytes()
}

// writeRoles writes each role's permissions as a variable of the block.
func writeRoles(b *bytes.Buffer, n AuthNames) {
	for i, r := range accountsRoles {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(b, "  # %s\n", strings.ReplaceAll(r.comment, "\n#", "\n  #"))
		writePermissions(b, r.variable, Permissions(r.role, n))
	}
}

func writePermissions(b *bytes.Buffer, variable string, p *server.Permissions) {
	fmt.Fprintf(b, "  %s = {\n    publish = {\n", variable)
	writeList(b, "allow", p.Publish.Allow)
	if len(p.Publish.Deny) > 0 {
		writeList(b, "deny", p.Publish.Deny)
	}
	b.WriteString("    }\n")
	fmt.Fprintf(b, "    subscribe = { allow = [%s] }\n  }\n", quoteList(p.Subscribe.Allow))
}

func writeList(b *bytes.Buffer, name string, subjects []string) {
	fmt.Fprintf(b, "      %s = [\n", name)
	for _, s := range subjects {
		fmt.Fprintf(b, "        %q\n", s)
	}
	b.WriteString("      ]\n")
}

func quoteList(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
