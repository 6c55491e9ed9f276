package configure

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// Files of the NATS TLS material, from the same CA as the Fluentd link:
// the certificate the embedded server presents on its listener ([nats]
// server-cert and server-key), and the cluster's directory.
const (
	NATSServerCertFile = "nats-server.crt"
	NATSServerKeyFile  = "nats-server.key"
	// NATSClusterDir holds, with --nats-cluster, every node's
	// configuration, certificate and key, the CA and accounts.conf: the
	// files each node needs, copied as they are to NATSConfDir.
	NATSClusterDir = "nats-cluster"
	// DefaultNATSStoreDir is where the nodes keep JetStream, one
	// directory per node.
	DefaultNATSStoreDir = "/var/lib/nats"
)

// nodeName is what a cluster node's name may be: a DNS label, used as
// server_name, file name and certificate name.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// ParseClusterNodes reads the --nats-cluster list: each entry is NAME,
// NAME=HOST or NAME=HOST:PORT. HOST (default NAME) is where the others
// and the clients reach the node, PORT (default 4222) its client port;
// its route port is PORT+2000 and its monitoring port PORT+4000.
func ParseClusterNodes(entries []string) ([]bus.ClusterNode, error) {
	var nodes []bus.ClusterNode
	seen := map[string]bool{}
	addrs := map[string]bool{}
	for _, e := range entries {
		name, addr, _ := strings.Cut(strings.TrimSpace(e), "=")
		if !nodeName.MatchString(name) || name == "ca" || name == "accounts" {
			return nil, fmt.Errorf("--nats-cluster %q: the node name must be a DNS label (letters, digits, -), not ca or accounts; write NAME, NAME=HOST or NAME=HOST:PORT", e)
		}
		if seen[name] {
			return nil, fmt.Errorf("--nats-cluster: node %q is listed twice", name)
		}
		seen[name] = true
		n := bus.ClusterNode{Name: name}
		if addr != "" {
			host, port := addr, ""
			if h, p, err := net.SplitHostPort(addr); err == nil {
				host, port = h, p
			}
			if host == "" || strings.ContainsAny(host, "/ ") {
				return nil, fmt.Errorf("--nats-cluster %q: bad host %q; write NAME=HOST or NAME=HOST:PORT", e, host)
			}
			n.Host = host
			if port != "" {
				p, err := strconv.Atoi(port)
				if err != nil || p < 1 || p > 65535-bus.MonitorPortOffset {
					return nil, fmt.Errorf("--nats-cluster %q: port %q must be a number from 1 to %d (its route port is +%d, monitoring +%d)", e, port, 65535-bus.MonitorPortOffset, bus.RoutePortOffset, bus.MonitorPortOffset)
				}
				n.ClientPort = p
			}
		}
		if u := n.ClientURL(); addrs[u] {
			return nil, fmt.Errorf("--nats-cluster %q: another node has the address %s; give each node its own host or port", e, strings.TrimPrefix(u, "tls://"))
		} else {
			addrs[u] = true
		}
		nodes = append(nodes, n)
	}
	if len(nodes) > 0 && len(nodes) < 3 {
		return nil, fmt.Errorf("--nats-cluster lists %d node(s): a JetStream cluster needs at least 3 to survive the loss of one", len(nodes))
	}
	return nodes, nil
}

// natsTLSFileNames lists the NATS TLS files Run writes, in writing order.
func natsTLSFileNames(o Options) []string {
	names := []string{NATSServerCertFile, NATSServerKeyFile}
	if len(o.NATSCluster) == 0 {
		return names
	}
	names = append(names, filepath.Join(NATSClusterDir, bus.ClusterCAFile))
	for _, n := range o.NATSCluster {
		names = append(names, filepath.Join(NATSClusterDir, n.CertFile()), filepath.Join(NATSClusterDir, n.KeyFile()))
	}
	for _, f := range bus.ClusterFiles(clusterSpec(o, nil)) {
		names = append(names, filepath.Join(NATSClusterDir, f.Name))
	}
	return names
}

// clusterSpec is the cluster of o, admitting users.
func clusterSpec(o Options, users []bus.User) bus.ClusterSpec {
	return bus.ClusterSpec{
		Nodes:     o.NATSCluster,
		ConfDir:   o.NATSConfDir,
		StoreDir:  o.NATSStoreDir,
		Users:     users,
		Names:     defaultAuthNames(),
		Generator: "Written by teleport-event-bus configure --nats-cluster",
	}
}

// natsTLS issues, from ca, the embedded listener's certificate and, with a
// cluster, each node's certificate (server and client use: routes
// authenticate both ways), and renders the cluster's configuration with
// the users' public keys. nats-server cannot read encrypted keys: every
// key is written unencrypted, mode 0600.
func natsTLS(o Options, ca *certs.CA, base certs.Request, users []bus.User) ([]output, error) {
	req := base
	req.CommonName, req.Usage = "teleport-event-bus NATS", certs.ServerAuth
	req.DNSNames, req.IPs = splitNames(o.NATSNames)
	server, err := ca.Issue(req)
	if err != nil {
		return nil, fmt.Errorf("NATS server certificate: %w", err)
	}
	outs := []output{{NATSServerCertFile, server.CertPEM, 0o644}, {NATSServerKeyFile, server.KeyPEM, 0o600}}
	if len(o.NATSCluster) == 0 {
		return outs, nil
	}
	in := func(name string) string { return filepath.Join(NATSClusterDir, name) }
	outs = append(outs, output{in(bus.ClusterCAFile), ca.CertPEM, 0o644})
	for _, n := range o.NATSCluster {
		req := base
		req.CommonName, req.Usage = n.Name, certs.ServerAuth|certs.ClientAuth
		req.DNSNames, req.IPs = splitNames(n.CertNames())
		pair, err := ca.Issue(req)
		if err != nil {
			return nil, fmt.Errorf("NATS node %s certificate: %w", n.Name, err)
		}
		outs = append(outs, output{in(n.CertFile()), pair.CertPEM, 0o644}, output{in(n.KeyFile()), pair.KeyPEM, 0o600})
	}
	for _, f := range bus.ClusterFiles(clusterSpec(o, users)) {
		outs = append(outs, output{in(f.Name), f.Data, 0o600})
	}
	return outs, nil
}

// splitNames sorts names into DNS names and IP addresses.
func splitNames(names []string) ([]string, []net.IP) {
	var dns []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// clusterURLs is [nats] url for the cluster: every node's TLS URL.
func clusterURLs(nodes []bus.ClusterNode) string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.ClientURL()
	}
	return strings.Join(urls, ",")
}

// defaultAuthNames are the stream, bucket and consumer names of the TOML
// configure writes.
func defaultAuthNames() bus.AuthNames {
	return bus.NamesFor(config.Default().NATS, config.Default().Sink)
}
