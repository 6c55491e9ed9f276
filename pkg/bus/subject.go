// Package bus is the JetStream side of the pipeline and the only place that
// spells a subject, a header or a stream name. Ingest publishes through it;
// the Fluentd sink and any other consumer (a SIEM feed, an archiver, the
// lock watcher) read through it. The contract it implements is in DESIGN.md
// ("The bus contract"); changing it breaks other people's consumers. It
// also says who may do what on the bus: the roles and their permissions
// (auth.go), the users file of the embedded server (users.go) and the
// cluster's accounts.conf rendered from the same roles (accounts.go).
package bus

import "strings"

// Subject prefixes of the two streams and of dead letters.
const (
	AuditPrefix      = "audit"
	SessionPrefix    = "session"
	DeadLetterPrefix = "deadletter"
)

// AuditSubject is the subject of an audit event of the given type:
// audit.<type>. Characters NATS does not allow in a token become "_"; an
// empty type becomes "unknown". Dots are kept, so "user.login" gives
// "audit.user.login" and audit.user.> selects every user event.
func AuditSubject(eventType string) string {
	return AuditPrefix + "." + tokens(eventType)
}

// SessionSubject is the subject of a session recording's events:
// session.<session id>.
func SessionSubject(sessionID string) string {
	return SessionPrefix + "." + token(sessionID)
}

// DeadLetterSubject is where a message from subject goes when Fluentd keeps
// refusing it: deadletter.<subject>.
func DeadLetterSubject(subject string) string {
	return DeadLetterPrefix + "." + subject
}

// tokens sanitises a dotted name token by token; empty tokens become "_" so
// the result is always a valid subject.
func tokens(s string) string {
	if s == "" {
		return "unknown"
	}
	parts := strings.Split(s, ".")
	for i, p := range parts {
		if p == "" {
			parts[i] = "_"
			continue
		}
		parts[i] = token(p)
	}
	return strings.Join(parts, ".")
}

// token makes s a single valid subject token.
func token(s string) string {
	if s == "" {
		return "unknown"
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f:
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
