package bus

import (
	"bytes"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
)

//go:generate go run ./internal/genaccounts -dir ../../deploy/nats

// Port offsets of a cluster node: its route port is its client port +
// RoutePortOffset and its monitoring port its client port +
// MonitorPortOffset (4222, 6222 and 8222, as nats-server's defaults).
const (
	DefaultClientPort = 4222
	RoutePortOffset   = 2000
	MonitorPortOffset = 4000
)

// ClusterName is the cluster's name in every node's configuration.
const ClusterName = "teleport-event-bus"

// AccountsFile is the cluster's authorization, included by every node.
const AccountsFile = "accounts.conf"

// ClusterNode is one nats-server of a cluster.
type ClusterNode struct {
	// Name is the server's name, the base name of its files (<Name>.conf,
	// <Name>.crt, <Name>.key) and a DNS name of its certificate.
	Name string
	// Host is where the other nodes and the clients reach it: a DNS name
	// or an IP address (empty: Name). A node given by IP listens on that
	// address only; one given by name on every interface.
	Host string
	// ClientPort is its client port (0: DefaultClientPort); the route and
	// monitoring ports follow from it.
	ClientPort int
}

func (n ClusterNode) host() string {
	if n.Host == "" {
		return n.Name
	}
	return n.Host
}

func (n ClusterNode) clientPort() int {
	if n.ClientPort == 0 {
		return DefaultClientPort
	}
	return n.ClientPort
}

// ClientURL is the TLS URL clients connect to.
func (n ClusterNode) ClientURL() string {
	return "tls://" + net.JoinHostPort(n.host(), strconv.Itoa(n.clientPort()))
}

// MonitorURL is the node's monitoring endpoint (/healthz, /jsz), served on
// 127.0.0.1 only, or on the node's IP when it was given by IP.
func (n ClusterNode) MonitorURL() string {
	return "http://" + net.JoinHostPort(n.monitorHost(), strconv.Itoa(n.clientPort()+MonitorPortOffset))
}

// listenHost is the address the node listens on.
func (n ClusterNode) listenHost() string {
	if net.ParseIP(n.host()) != nil {
		return n.host()
	}
	return "0.0.0.0"
}

func (n ClusterNode) monitorHost() string {
	if ip := net.ParseIP(n.host()); ip != nil {
		return n.host()
	}
	return "127.0.0.1"
}

// CertNames are the names the node's certificate must hold: its name and
// its host.
func (n ClusterNode) CertNames() []string {
	if n.host() == n.Name {
		return []string{n.Name}
	}
	return []string{n.Name, n.host()}
}

// ConfFile is the node's configuration file name.
func (n ClusterNode) ConfFile() string { return n.Name + ".conf" }

// CertFile and KeyFile are the node's certificate and (unencrypted) key,
// valid for server and client use: routes authenticate both ways.
func (n ClusterNode) CertFile() string { return n.Name + ".crt" }

// KeyFile: see CertFile.
func (n ClusterNode) KeyFile() string { return n.Name + ".key" }

// ClusterCAFile is the CA every node and client verifies the others with.
const ClusterCAFile = "ca.crt"

// ClusterSpec describes a NATS cluster for the bus.
type ClusterSpec struct {
	Nodes []ClusterNode
	// ConfDir is the directory the files are in on every node (the TLS
	// files are named by absolute path).
	ConfDir string
	// StoreDir holds each node's JetStream store, in <StoreDir>/<Name>.
	StoreDir string
	// Users are admitted with their roles' permissions (NKeyAuthorization).
	Users []User
	// Names are the stream, bucket and consumer names.
	Names AuthNames
	// Generator names what wrote the files, for their header.
	Generator string
}

// ConfFileData is a file of a cluster configuration.
type ConfFileData struct {
	Name string
	Data []byte
}

// ClusterFiles renders the configuration of every node (<Name>.conf) and
// the authorization they include (accounts.conf): client TLS with the
// node's certificate (clients verify it with the CA and log in with their
// NKey), mutual route TLS, JetStream, and the users of spec with their
// roles' permissions. deploy/nats and `configure --nats-cluster` are both
// this function's output.
func ClusterFiles(spec ClusterSpec) []ConfFileData {
	var out []ConfFileData
	for i, n := range spec.Nodes {
		out = append(out, ConfFileData{n.ConfFile(), nodeConf(spec, i)})
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `# The users of the teleport-event-bus NATS cluster and what each may do.
# %s; the embedded server of ingest enforces the same roles
# (pkg/bus Permissions). Public NKeys only: each role's seed stays with the
# command that uses it. The names below are
#   [nats] audit-stream    %s
#   [nats] session-stream  %s
#   [nats] state-bucket    %s (stream KV_%s)
#   [sink] audit-consumer  %s, session-consumer %s
# Every client receives JetStream API replies and publish acks on _INBOX.>.

`, spec.Generator, spec.Names.AuditStream, spec.Names.SessionStream, spec.Names.StateBucket, spec.Names.StateBucket,
		spec.Names.SinkAuditConsumer, spec.Names.SinkSessionConsumer)
	b.Write(NKeyAuthorization(spec.Users, spec.Names))
	return append(out, ConfFileData{AccountsFile, b.Bytes()})
}

// nodeConf is node i's configuration.
func nodeConf(spec ClusterSpec, i int) []byte {
	n := spec.Nodes[i]
	file := func(name string) string { return path.Join(spec.ConfDir, name) }
	var routes []string
	for j, o := range spec.Nodes {
		if j != i {
			routes = append(routes, "    nats-route://"+net.JoinHostPort(o.host(), strconv.Itoa(o.clientPort()+RoutePortOffset)))
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `# teleport-event-bus: NATS JetStream cluster, node %[1]s (%[2]d of %[3]d).
# %[4]s.
# Start with
#   nats-server -c %[5]s

server_name: %[1]s
listen: %[6]s
# Monitoring (/healthz, /jsz, /varz); keep it off the public network.
http: %[7]s

# Client TLS: clients verify this certificate with ca.crt ([nats] ca) and
# log in with the NKey of their role (accounts.conf).
tls {
  cert_file: %[8]q
  key_file: %[9]q
  ca_file: %[10]q
  timeout: 5
}

cluster {
  name: %[11]s
  listen: %[12]s
  routes: [
%[13]s
  ]
  # Route TLS, mutual: every node's certificate is valid for server and
  # client use and names the node.
  tls {
    cert_file: %[8]q
    key_file: %[9]q
    ca_file: %[10]q
    verify: true
    timeout: 5
  }
}

jetstream {
  store_dir: %[14]q
  max_file_store: 50G
  max_memory_store: 256M
}

include ./%[15]s
`, n.Name, i+1, len(spec.Nodes), spec.Generator, file(n.ConfFile()),
		net.JoinHostPort(n.listenHost(), strconv.Itoa(n.clientPort())),
		net.JoinHostPort(n.monitorHost(), strconv.Itoa(n.clientPort()+MonitorPortOffset)),
		file(n.CertFile()), file(n.KeyFile()), file(ClusterCAFile),
		ClusterName, net.JoinHostPort(n.listenHost(), strconv.Itoa(n.clientPort()+RoutePortOffset)),
		strings.Join(routes, "\n"), path.Join(spec.StoreDir, n.Name), AccountsFile)
	return b.Bytes()
}

// TemplateCluster is the cluster of deploy/nats: nodes nats-1, nats-2 and
// nats-3 on their default ports, files in /etc/nats, stores under
// /var/lib/nats, the default names, and each role's public NKey taken
// from the servers' environment (NKeyEnvUsers). `configure
// --nats-cluster` writes the same files with the real keys.
func TemplateCluster(n AuthNames) ClusterSpec {
	return ClusterSpec{
		Nodes:     []ClusterNode{{Name: "nats-1"}, {Name: "nats-2"}, {Name: "nats-3"}},
		ConfDir:   "/etc/nats",
		StoreDir:  "/var/lib/nats",
		Users:     NKeyEnvUsers(),
		Names:     n,
		Generator: "Generated from pkg/bus by go generate ./pkg/bus: do not edit (configure --nats-cluster writes the same files with your keys)",
	}
}
