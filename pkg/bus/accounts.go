package bus

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// accountsRoles are the roles of an authorization block: the variable
// holding the role's permissions, the environment variable deploy/nats
// reads the role's public NKey from, and what the role does.
var accountsRoles = []struct {
	role          Role
	variable, env string
	comment       string
}{
	{RoleIngest, "INGEST", "NATS_INGEST_NKEY",
		"ingest: publishes audit.> and session.>, creates and updates the streams\n# (audit, sessions, dead letters) and the state bucket, runs the lock\n# watcher's consumer, its own stream scans and `ingest status`."},
	{RoleSink, "SINK", "NATS_SINK_NKEY",
		"fluentd-sink: reads through its two durable consumers (create/update,\n# info, pull, ack), publishes dead letters, may create a missing stream\n# (never change one) and read the state bucket's caught-up key only.\n# It cannot publish events."},
	{RoleReader, "READER", "NATS_READER_NKEY",
		"Other consumers (SIEM feed, archiver, `nats sub`): read the audit,\n# session and dead-letter streams through consumers of their own,\n# live-subscribe to audit.>, session.> and deadletter.>, and publish\n# nothing onto the bus. They cannot touch the sink's, the lock\n# watcher's or ingest's scan consumers, or the state bucket."},
}

// NKeyEnvUsers are one user per role whose NKey is a reference to an
// environment variable of the nats-server process ($NATS_INGEST_NKEY,
// $NATS_SINK_NKEY, $NATS_READER_NKEY): the placeholders of deploy/nats.
func NKeyEnvUsers() []User {
	users := make([]User, 0, len(accountsRoles))
	for _, r := range accountsRoles {
		users = append(users, User{Role: r.role, NKey: "$" + r.env})
	}
	return users
}

// NKeyAuthorization renders the authorization block of a nats-server
// configuration that admits users, each with the permissions of its role
// computed from n: the block of the cluster's accounts.conf, of a
// nats-server of your own (nats-server -c) or of a Helm chart's server
// configuration. A user's NKey is its public key (U…), or a "$VARIABLE"
// nats-server resolves from its configuration or environment. Users share
// one account, because JetStream keeps streams, consumers and KV buckets
// per account and every role works on the same streams. No password is
// ever written.
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
