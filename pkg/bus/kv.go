package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// State opens the state KV bucket ([nats] state-bucket), creating it on
// first use with one value per key, file storage and the configured
// replicas. It holds ingest cursors, export progress, session progress, the
// ingest lease and lock counters: with the embedded server it lives under
// the storage directory like the streams. Keys come from the *Key helpers.
func (b *Bus) State(ctx context.Context) (jetstream.KeyValue, error) {
	b.kvMu.Lock()
	defer b.kvMu.Unlock()
	if b.kv != nil {
		return b.kv, nil
	}
	want := StateBucketConfig(b.Cfg)
	kv, err := b.JS.KeyValue(ctx, want.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = b.JS.CreateKeyValue(ctx, want)
		if errors.Is(err, jetstream.ErrBucketExists) {
			// Another process created it between our look-up and create.
			kv, err = b.JS.KeyValue(ctx, want.Bucket)
		} else if err == nil {
			b.log.Info().Str("bucket", want.Bucket).Int("replicas", want.Replicas).Msg("state bucket created")
		}
	} else if err == nil {
		err = b.matchStateReplicas(ctx, want)
	}
	if err != nil {
		return nil, fmt.Errorf("open state bucket %q: %w", want.Bucket, err)
	}
	b.kv = kv
	return kv, nil
}

// matchStateReplicas brings an existing bucket to the configured replicas.
func (b *Bus) matchStateReplicas(ctx context.Context, want jetstream.KeyValueConfig) error {
	st, err := b.JS.Stream(ctx, "KV_"+want.Bucket)
	if err != nil {
		return err
	}
	have := st.CachedInfo().Config
	if have.Replicas == want.Replicas {
		return nil
	}
	have.Replicas = want.Replicas
	if _, err := b.JS.UpdateStream(ctx, have); err != nil {
		return fmt.Errorf("JetStream refused the change of replicas to %d: %w", want.Replicas, err)
	}
	b.log.Info().Str("bucket", want.Bucket).Int("replicas", want.Replicas).Msg("state bucket replicas updated")
	return nil
}

// Keys of the state bucket. Variable parts go through KeyToken, so any
// string (a user name with spaces, a chunk id with slashes) makes a valid,
// distinct key.
const (
	// LeaseKey holds the ingest lease: which process reads Teleport.
	LeaseKey = "ingest.lease"
	// StartTimeKey holds the start-time fixed on the first run (RFC 3339).
	StartTimeKey = "ingest.start_time"
	// RecoveryKey marks a recovery (`ingest recover`) that the next run
	// finishes: it re-reads from start-time and publishes only the events
	// the streams no longer hold.
	RecoveryKey = "ingest.recovery"
)

// SinkConsumerKey is the state key where the sinks record their durable
// consumer on a stream: when it was created and the last acknowledged
// position they saw, so that a consumer deleted under them is told from
// one never created (and resumed from there on request). The sink role
// may read and write these keys, and no other.
func SinkConsumerKey(consumer string) string { return "sink-consumer." + consumer }

// StreamMarkKey is the key of what ingest's positions know about a stream:
// when it was created and the highest sequence ingest saw acknowledged in
// it. The positions are only valid while that stream holds that much.
func StreamMarkKey(stream string) string {
	return "stream." + KeyToken(stream)
}

// CursorKey is the key of a named read cursor, e.g. CursorKey("search") for
// the search-paging path.
func CursorKey(name string) string {
	return "cursor." + KeyToken(name)
}

// ChunkKey is the key of one bulk-export chunk's resume cursor for a UTC
// date ("2006-01-02").
func ChunkKey(date, chunk string) string {
	return ChunkKeyPrefix(date) + KeyToken(chunk)
}

// ChunkKeyPrefix is the common prefix of a date's chunk keys; list them
// with the filter ChunkKeyPrefix(date)+">".
func ChunkKeyPrefix(date string) string {
	return "chunk." + KeyToken(date) + "."
}

// DateKey is the key of a UTC date's export progress (its completed chunks).
func DateKey(date string) string {
	return "date." + KeyToken(date)
}

// SessionKey is the key of a session recording's progress.
func SessionKey(sid string) string {
	return "session." + KeyToken(sid)
}

// LockCounterKey is the key of the failed-login counter of a Teleport user
// logging in as login.
func LockCounterKey(user, login string) string {
	return "lock." + KeyToken(user) + "." + KeyToken(login)
}

// KeyToken encodes s as one KV key token: ASCII letters, digits, '-' and
// '_' stay, every other byte becomes =XX (hex), and "" becomes "=". The
// encoding is reversible (DecodeKeyToken) so different strings never share
// a key.
func KeyToken(s string) string {
	if s == "" {
		return "="
	}
	const hexdigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('=')
			b.WriteByte(hexdigits[c>>4])
			b.WriteByte(hexdigits[c&0xf])
		}
	}
	return b.String()
}

// DecodeKeyToken reverses KeyToken, for listing keys.
func DecodeKeyToken(tok string) (string, error) {
	if tok == "=" {
		return "", nil
	}
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		if tok[i] != '=' {
			b.WriteByte(tok[i])
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("decode key token %q: truncated escape", tok)
		}
		v, err := strconv.ParseUint(tok[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("decode key token %q: bad escape %q", tok, tok[i:i+3])
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}
