package fluentdsim

import (
	"time"

	"github.com/rs/zerolog"
)

// Options configure a Server. The zero value is not usable: give the server
// its TLS material (files or PEM bytes) or set PlainHTTP.
type Options struct {
	// Addr is the listen address of the in_http endpoint; default
	// "127.0.0.1:0" (a random port).
	Addr string

	// CAFile, CertFile and KeyFile are PEM files: the CA that client
	// certificates must chain to, and the server's certificate and key.
	CAFile, CertFile, KeyFile string
	// CAPEM, CertPEM and KeyPEM give the same material in memory; each is
	// used when the matching file name is empty.
	CAPEM, CertPEM, KeyPEM []byte
	// KeyPassphrase opens an encrypted PKCS#8 server key.
	KeyPassphrase string
	// PlainHTTP serves plain HTTP without TLS (in_http without a
	// <transport tls> section). TLS material is ignored.
	PlainHTTP bool

	// StatusCreated answers 201 instead of 200 on success, as Fluent Bit's
	// http input does.
	StatusCreated bool

	// MatchTags, when not empty, are the patterns of the <match> sections
	// (Fluentd syntax: `*` is one tag part, `**` zero or more parts, e.g.
	// "test.log", "session.*.log"). A request whose tag matches none is
	// answered 200 and dropped with a warning. Empty: every tag matches.
	MatchTags []string

	// KeepRecords keeps every stored record's JSON for Records. Off, only
	// ids, times and sizes are kept.
	KeepRecords bool

	// KeepTimeKey is in_http's `keep_time_key true` in <parse>: the record
	// is stored with its `time`. Off, as Fluentd's default, `time` becomes
	// the event time and is taken out of the stored record. in_forward
	// stores records as sent either way. KeepTimeKey(fluent.conf) reads
	// it from a configuration.
	KeepTimeKey bool

	// JSONLPath, when set, appends each stored record as one line
	// {"tag":…,"time":…,"record":{…}} to this file.
	JSONLPath string

	// StatsAddr, when set, serves plain-HTTP GET /stats, GET /ids?tag=…,
	// GET /records?tag=…, PUT /faults and POST /down?for=… on this address
	// (use "127.0.0.1:0" for a random port).
	StatsAddr string

	// ForwardAddr, when set, also serves Fluentd's in_forward on this
	// address ("127.0.0.1:0" for a random port), with the same TLS
	// material (plain TCP with PlainHTTP), store, faults and stats; see
	// forward.go for how it answers.
	ForwardAddr string
	// SharedKey turns on in_forward's <security>: the HELO/PING/PONG
	// handshake with this shared_key, SelfHostname as self_hostname
	// (default "fluentd-sim"), and, when Users is not empty, user_auth with
	// these user → password pairs.
	SharedKey    string
	SelfHostname string
	Users        map[string]string

	// Faults are in force from the start; change them with SetFaults.
	Faults Faults

	// Logger receives warnings (unmatched tags, TLS handshake failures,
	// down/up transitions). The zero value logs nothing.
	Logger zerolog.Logger
}

// Faults are failures the server produces on demand. The zero value is a
// healthy server.
type Faults struct {
	// ErrorPercent of requests (0–100) are answered 500 without storing.
	ErrorPercent float64 `json:"error_percent,omitempty"`
	// DropPercent of requests (0–100) get their connection closed without
	// an answer and nothing stored.
	DropPercent float64 `json:"drop_percent,omitempty"`
	// Latency is added before each answer, after the records are stored: a
	// client that times out has still delivered them, as with a slow Fluentd.
	Latency time.Duration `json:"latency,omitempty"`
	// EmitFail answers every request 500, as Fluentd does when it cannot
	// buffer (emit fails).
	EmitFail bool `json:"emit_fail,omitempty"`
	// Poison answers 400 to a request holding a record whose top-level field
	// equals the value (a string field by its text, others by their JSON);
	// nothing from that request is stored. Used to test dead-lettering.
	Poison []Poison `json:"poison,omitempty"`
	// NoAck (in_forward only) stores the records of a message and never
	// sends its ack, as a Fluentd whose answers are lost.
	NoAck bool `json:"no_ack,omitempty"`
}

// Poison selects records to refuse: those whose top-level Field equals Value.
type Poison struct {
	Field string `json:"field"`
	Value string `json:"value"`
}
