package configure

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// paths are the absolute locations the generated configs point at.
type paths struct {
	dir string
	o   Options
}

func (p paths) file(name string) string { return filepath.Join(p.dir, name) }
func (p paths) caCert() string          { return p.file(p.o.CAName + ".crt") }
func (p paths) serverCert() string      { return p.file(p.o.ServerName + ".crt") }
func (p paths) serverKey() string       { return p.file(p.o.ServerName + ".key") }
func (p paths) clientCert() string      { return p.file(p.o.ClientName + ".crt") }
func (p paths) clientKey() string       { return p.file(p.o.ClientName + ".key") }
func (p paths) clientPass() string      { return p.file(p.o.ClientName + ".key.pass") }
func (p paths) identity() string        { return p.file(IdentityFile) }
func (p paths) storage() string         { return p.file("storage") }
func (p paths) fluentdData() string     { return p.file("fluentd") }

// fluentdBase is the https://host:port the sink posts to.
func (p paths) fluentdBase() string {
	return "https://" + net.JoinHostPort(fluentdHost(p.o), strconv.Itoa(DefaultFluentdPort))
}

// RoleVersion is the version of the role configure writes: the oldest one
// whose defaults grant nothing beyond its rules (v3 would add wildcard app,
// Kubernetes and database labels), accepted by every Teleport from v13 (which
// refuses v7) to v18, and the one Teleport's own event handler writes. The
// test table teleportRoleVersions holds the facts behind the choice.
const RoleVersion = "v4"

// renderRole is the Teleport role the ingest signs in as, for
// `tctl create -f`. The user is a separate file (renderUser): a role that
// Teleport refuses then stops the steps at its own error, instead of
// leaving a user without the role to fail later with "access denied".
func renderRole(lock bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `# Create this role first: tctl create -f %[3]s
# (then the user: tctl create -f %[4]s)
kind: role
version: %[2]s
metadata:
  name: %[1]s
spec:
  allow:
    rules:
      - resources: ['event', 'session']
        verbs: ['list', 'read']
`, RoleName, RoleVersion, RoleFile, UserFile)
	if lock {
		b.WriteString(`      - resources: ['lock']
        verbs: ['create', 'update']
`)
	}
	return b.Bytes()
}

// renderUser is the Teleport user holding the role of renderRole.
func renderUser() []byte {
	return fmt.Appendf(nil, `# Create the role first (tctl create -f %[2]s): without it
# Teleport refuses this user, saying the role is not found.
kind: user
version: v2
metadata:
  name: %[1]s
spec:
  roles: ['%[1]s']
`, RoleName, RoleFile)
}

// fluentString quotes s as a Fluentd double-quoted string, in which a
// backslash escapes and "#{" would run Ruby code.
func fluentString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `#`, `\#`)
	return `"` + r.Replace(s) + `"`
}

// renderFluentConf is a fluent.conf for Fluentd >= 1.12.4 (in_http on TLS).
func renderFluentConf(p paths, serverPass []byte) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `# Fluentd >= 1.12.4 (TLS in in_http). Written by teleport-event-bus configure.
# Start with: fluentd -c %[1]s

<source>
  @type http
  port %[2]d
  # Only local clients; use 0.0.0.0 to accept the sink from other hosts.
  bind %[3]s

  <transport tls>
    ca_path %[4]s
    cert_path %[5]s
    private_key_path %[6]s
    private_key_passphrase %[7]s
    client_cert_auth true
  </transport>

  <parse>
    @type json
    json_parser oj
    # Teleport's "time" is RFC 3339 with milliseconds; the rest after the
    # seconds is ignored, and utc keeps the Fluentd host's zone out of it.
    time_type string
    time_format %%Y-%%m-%%dT%%H:%%M:%%S
    utc true
    # Keep "time" in the record too: the event as Teleport returned it, the
    # same record in_forward stores (Fluentd's default takes it out).
    keep_time_key true
  </parse>
</source>
`, p.file(FluentConfFile), DefaultFluentdPort, DefaultFluentdBind,
		fluentString(p.caCert()), fluentString(p.serverCert()), fluentString(p.serverKey()),
		fluentString(string(serverPass)))
	for _, m := range []struct{ tag, name string }{{"test.log", "audit"}, {"session.*.log", "session"}} {
		fmt.Fprintf(&b, `
<match %[1]s>
  @type file
  path %[2]s
  append true
  <format>
    @type json
  </format>
  # A file buffer keeps accepted events across a Fluentd restart.
  <buffer>
    @type file
    path %[3]s
    flush_mode interval
    flush_interval 1s
    chunk_limit_size 8m
    total_limit_size 1g
    retry_forever true
    retry_max_interval 30
  </buffer>
</match>
`, m.tag, fluentString(filepath.Join(p.fluentdData(), m.name)), fluentString(filepath.Join(p.fluentdData(), "buffer", m.name)))
	}
	return b.Bytes(), nil
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// renderTOML is the configuration all three commands read, in the older
// tool's layout plus the [nats], [ingest] and [sink] sections.
func renderTOML(p paths) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `# teleport-event-handler.toml, read by ingest, fluentd-sink (and the older
# teleport-event-handler). Every key also has a flag and an FDFWD_* variable.

# State directory: with the embedded NATS server it holds JetStream's files,
# and with them every cursor.
storage = %[1]s
# Poll interval once caught up.
timeout = "5s"
# batch (the older tool's page size) is not used: ingest pages with
# [ingest] page-size.
namespace = "default"
# types = ["user.login", "session.upload"]
# skip-event-types = []
# skip-session-types = ["print"]
# Oldest event to export, fixed by the first run; without it ingest reads
# from the moment it first starts (ingest backfill moves it earlier).
# start-time = "2025-01-01T00:00:00Z"

[forward.fluentd]
ca = %[2]s
cert = %[3]s
key = %[4]s
`, tomlString(p.storage()), tomlString(p.caCert()), tomlString(p.clientCert()), tomlString(p.clientKey()))
	if p.o.EncryptClientKey {
		fmt.Fprintf(&b, "key-passphrase-file = %s\n", tomlString(p.clientPass()))
	}
	fmt.Fprintf(&b, `url = %[1]s
# Each session's events go to <session-url>.<session id>.log.
session-url = %[2]s

[teleport]
addr = %[3]s
# Written by: tctl auth sign --format=file --user=%[4]s --out=%[5]s
identity = %[5]s

[nats]
%[6]s# audit-stream = "TELEPORT_AUDIT"
# session-stream = "TELEPORT_SESSIONS"
# state-bucket = "teleport_event_bus"
# JetStream drops a re-published event within this window (audit and session
# streams). Short is enough: on a restart ingest reads the stream after its
# saved positions and publishes only what is missing, so it stays exactly-once.
# duplicate-window = "5s"

[ingest]
# /metrics, /healthz and /readyz; "" turns them off.
# metrics-addr = "127.0.0.1:9090"
# NKey seed ingest (and ingest status) connects to NATS with.
nats-nkey = %[7]s
# max-in-flight = 2048
# page-size = 10000
# lease-ttl = "10s"
# missing-recording-ttl = "48h"
# Memory ingest may hold, the embedded server's included: "auto" (3/4 of the
# cgroup limit, else 288MiB), a size ("512MiB"), or "off".
# memory-budget = "auto"

[sink]
# Each sink takes the first free port of the range (and logs it).
# metrics-addr = "127.0.0.1:9091-9099"
# NKey seed the sink connects to NATS with.
nats-nkey = %[8]s
# audit-consumer = "fluentd-sink-audit"
# session-consumer = "fluentd-sink-sessions"
# batch-size = 100
# max-deliver = 10
# ack-wait = "30s"
`, tomlString(p.fluentdBase()+"/test.log"), tomlString(p.fluentdBase()+"/session"),
		tomlString(p.o.TeleportAddr), RoleName, tomlString(p.identity()), natsTOML(p),
		tomlString(p.file(NATSSeedFile(bus.RoleIngest))), tomlString(p.file(NATSSeedFile(bus.RoleSink))))
	if p.o.Lock {
		b.WriteString(`
[lock]
# The role allows creating locks: lock users after repeated failed logins.
enabled = true
# failed-attempts-count = 3
# period = "1m"
# for = "0s"
`)
	}
	return b.Bytes()
}

// natsTOML is the [nats] section's start: the embedded server, or with
// --nats-cluster the cluster's URLs, CA and replicas.
func natsTOML(p paths) string {
	if nodes := p.o.NATSCluster; len(nodes) > 0 {
		return fmt.Sprintf(`# The NATS cluster of %[1]s (configure --nats-cluster): TLS on
# every node, verified with this CA; each command logs in with its NKey.
url = %[2]s
ca = %[3]s
# Streams and the state bucket on 3 nodes survive the loss of one (read by
# ingest only).
replicas = %[4]d
`, filepath.Join(p.dir, NATSClusterDir), tomlString(clusterURLs(nodes)), tomlString(p.caCert()), min(3, len(nodes)))
	}
	return fmt.Sprintf(`# Empty: ingest runs an embedded NATS server, storing under "storage" and
# listening on "listen". Set a server list (tls://a:4222,tls://b:4222) to
# use a cluster instead (configure --nats-cluster writes one).
url = ""
listen = %[1]s
# The embedded server admits only the NKeys of this file, each with its
# role's permissions (ingest, fluentd-sink, reader). Other readers connect
# with nats-reader.nk: nats --nkey %[3]s ...
users = %[2]s
# To serve other hosts (listen = "0.0.0.0:4222") the embedded server needs
# TLS: set server-cert = %[4]s
# and server-key = %[5]s (valid for configure's --nats-names), and
# give every client ca = %[6]s.
# replicas = 1
`, tomlString(defaultNATSListen), tomlString(p.file(NATSUsersFile)), p.file(NATSSeedFile(bus.RoleReader)),
		tomlString(p.file(NATSServerCertFile)), tomlString(p.file(NATSServerKeyFile)), tomlString(p.caCert()))
}

// defaultNATSListen is the embedded server's client address.
const defaultNATSListen = "127.0.0.1:4222"
