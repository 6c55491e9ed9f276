package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// The users of deploy/nats/accounts.conf, named after their roles.
const (
	NATSUserIngest = string(bus.RoleIngest)
	NATSUserSink   = string(bus.RoleSink)
	NATSUserReader = string(bus.RoleReader)
)

// natsPasswordEnv is the environment variable accounts.conf reads each
// user's password from.
var natsPasswordEnv = map[string]string{
	NATSUserIngest: "NATS_INGEST_PASSWORD",
	NATSUserSink:   "NATS_SINK_PASSWORD",
	NATSUserReader: "NATS_READER_PASSWORD",
}

// natsConfFiles are the files of deploy/nats, copied together because the
// node files include the others by relative path.
var natsConfFiles = []string{"node-1.conf", "node-2.conf", "node-3.conf", "tls.conf", "route-tls.conf", "accounts.conf"}

// NATSCluster is the 3-node JetStream cluster of deploy/nats, rendered for
// this machine (127.0.0.1, free ports, files under Dir) and run as separate
// nats-server processes.
type NATSCluster struct {
	// Dir holds the rendered configuration (conf/), the certificates
	// (tls/), each node's JetStream store (node-N/) and the logs (logs/).
	Dir string
	// CA, ClientCert and ClientKey are what a client presents: the cluster
	// requires a client certificate signed by CA.
	CA, ClientCert, ClientKey string
	// Passwords of the users of accounts.conf, by user name.
	Passwords map[string]string
	Nodes     []*NATSNode

	bin string
	env []string
}

// NATSNode is one server of a NATSCluster.
type NATSNode struct {
	Name string // nats-1, nats-2, nats-3
	// ClientURL is where clients connect (TLS), MonitorURL the HTTP
	// monitoring endpoint (/healthz, /jsz).
	ClientURL  string
	MonitorURL string
	ConfPath   string
	// Proc is the running process; nil before Start and after Kill.
	Proc *Proc
}

// RenderNATSCluster copies deploy/nats into dir/conf with the deployment's
// host names, ports and /etc/nats, /var/lib/nats paths replaced by
// 127.0.0.1, free ports and directories under dir, and writes the
// certificates the configuration names (a CA, one server certificate for
// every node, a client certificate). The committed files are the template:
// a replaced line that is no longer in them is an error, so the test
// follows the files operators install. Nothing is started.
func RenderNATSCluster(dir string) (*NATSCluster, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	c := &NATSCluster{Dir: dir, Passwords: map[string]string{}}
	for _, d := range []string{"conf", "tls", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("render NATS cluster: %w", err)
		}
	}
	if err := c.writeCerts(); err != nil {
		return nil, err
	}
	ports, err := freePorts(9)
	if err != nil {
		return nil, err
	}
	client, route, monitor := ports[0:3], ports[3:6], ports[6:9]
	shared := []string{
		"/etc/nats/tls/", filepath.Join(dir, "tls") + "/",
	}
	for _, name := range natsConfFiles {
		data, err := os.ReadFile(filepath.Join(root, "deploy", "nats", name))
		if err != nil {
			return nil, fmt.Errorf("render NATS cluster: %w", err)
		}
		repl := shared
		if n, ok := nodeNumber(name); ok {
			repl = append(repl,
				"listen: 0.0.0.0:4222", "listen: 127.0.0.1:"+strconv.Itoa(client[n-1]),
				"listen: 0.0.0.0:6222", "listen: 127.0.0.1:"+strconv.Itoa(route[n-1]),
				"http: 127.0.0.1:8222", "http: 127.0.0.1:"+strconv.Itoa(monitor[n-1]),
				"/var/lib/nats/jetstream", filepath.Join(dir, fmt.Sprintf("node-%d", n), "jetstream"),
				"max_file_store: 50G", "max_file_store: 1G",
			)
			for k := 1; k <= 3; k++ {
				if k != n {
					repl = append(repl, fmt.Sprintf("nats-route://nats-%d:6222", k), "nats-route://127.0.0.1:"+strconv.Itoa(route[k-1]))
				}
			}
			c.Nodes = append(c.Nodes, &NATSNode{
				Name:       fmt.Sprintf("nats-%d", n),
				ClientURL:  "tls://127.0.0.1:" + strconv.Itoa(client[n-1]),
				MonitorURL: "http://127.0.0.1:" + strconv.Itoa(monitor[n-1]),
				ConfPath:   filepath.Join(dir, "conf", name),
			})
		}
		out, err := replaceAll(string(data), repl)
		if err != nil {
			return nil, fmt.Errorf("render deploy/nats/%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "conf", name), []byte(out), 0o600); err != nil {
			return nil, fmt.Errorf("render NATS cluster: %w", err)
		}
	}
	for user, env := range natsPasswordEnv {
		pw, err := randomHex(16)
		if err != nil {
			return nil, err
		}
		c.Passwords[user] = pw
		c.env = append(c.env, env+"="+pw)
	}
	return c, nil
}

// StartNATSCluster renders deploy/nats into dir (see RenderNATSCluster),
// starts the three nodes with the nats-server binary bin, and waits until
// each of them is healthy and a JetStream meta leader is elected. The
// processes are killed when ctx ends.
func StartNATSCluster(ctx context.Context, bin, dir string) (*NATSCluster, error) {
	c, err := RenderNATSCluster(dir)
	if err != nil {
		return nil, err
	}
	c.bin = bin
	for i := range c.Nodes {
		if err := c.Start(ctx, i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Start starts node i (0-based) again after Kill, or the first time.
func (c *NATSCluster) Start(ctx context.Context, i int) error {
	n := c.Nodes[i]
	if n.Proc != nil {
		return fmt.Errorf("start %s: already running", n.Name)
	}
	p, err := Start(ctx, Spec{
		Name:   n.Name,
		Bin:    c.bin,
		Args:   []string{"-c", n.ConfPath},
		Env:    c.env,
		LogDir: filepath.Join(c.Dir, "logs"),
	})
	if err != nil {
		return err
	}
	n.Proc = p
	return nil
}

// Kill kills node i with SIGKILL and waits for it to exit.
func (c *NATSCluster) Kill(i int) {
	if p := c.Nodes[i].Proc; p != nil {
		p.Kill()
		c.Nodes[i].Proc = nil
	}
}

// Stop kills every running node.
func (c *NATSCluster) Stop() {
	for i := range c.Nodes {
		c.Kill(i)
	}
}

// Tails is the last n log lines of every running node, for failure
// messages.
func (c *NATSCluster) Tails(n int) string {
	var b strings.Builder
	for _, node := range c.Nodes {
		if node.Proc != nil {
			b.WriteString(node.Proc.Tail(n))
			b.WriteString("\n")
		}
	}
	return b.String()
}

// URLs is the comma-separated client URL list of every node, for
// [nats] url.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.ClientURL
	}
	return strings.Join(urls, ",")
}

// NATSConfig is the [nats] section a client logging in as user (one of the
// NATSUser* names; "" for no user) uses: every node's URL, the client
// certificate, and replicas 3.
func (c *NATSCluster) NATSConfig(user string) config.NATSConfig {
	cfg := config.Default().NATS
	cfg.URL = c.URLs()
	cfg.CA, cfg.Cert, cfg.Key = c.CA, c.ClientCert, c.ClientKey
	cfg.Replicas = 3
	if user != "" {
		cfg.User, cfg.Password = user, c.Passwords[user]
	}
	return cfg
}

// WaitReady waits until every running node answers /healthz with 200 and
// reports a running node as the JetStream meta leader on /jsz. After a
// Kill, this is when JetStream API requests (creating a consumer, say) are
// answered again: only the meta leader answers them, so during the election
// they go unanswered until the client's timeout.
func (c *NATSCluster) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	running := map[string]bool{}
	for _, n := range c.Nodes {
		if n.Proc != nil {
			running[n.Name] = true
		}
	}
	for {
		var why error
		for _, n := range c.Nodes {
			if n.Proc == nil {
				continue
			}
			if done, code := n.Proc.Exited(); done {
				return fmt.Errorf("%s exited with code %d\n%s", n.Name, code, n.Proc.Tail(20))
			}
			if why = n.ready(ctx, running); why != nil {
				break
			}
		}
		if why == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("NATS cluster not ready: %w (%w)", why, ctx.Err())
		case <-tick.C:
		}
	}
}

// ready reports why the node is not healthy, or nil.
func (n *NATSNode) ready(ctx context.Context, running map[string]bool) error {
	if _, err := getMonitor(ctx, n.MonitorURL+"/healthz"); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	body, err := getMonitor(ctx, n.MonitorURL+"/jsz")
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	var jsz struct {
		Meta *struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := json.Unmarshal(body, &jsz); err != nil {
		return fmt.Errorf("%s: /jsz: %w", n.Name, err)
	}
	if jsz.Meta == nil || !running[jsz.Meta.Leader] {
		return fmt.Errorf("%s: no JetStream meta leader among the running nodes yet", n.Name)
	}
	return nil
}

// getMonitor fetches a monitoring endpoint, failing on a status other than
// 200.
func getMonitor(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// writeCerts writes tls/ca.crt, one server certificate valid for every
// node name and 127.0.0.1 (for client and route TLS), and a client
// certificate.
func (c *NATSCluster) writeCerts() error {
	ca, err := certs.NewCA(certs.Request{CommonName: "teleport-event-bus NATS test CA", KeyType: certs.KeyECDSA, TTL: 24 * time.Hour})
	if err != nil {
		return fmt.Errorf("NATS cluster CA: %w", err)
	}
	server, err := ca.Issue(certs.Request{
		CommonName: "nats",
		DNSNames:   []string{"nats-1", "nats-2", "nats-3", "localhost"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1)},
		Usage:      certs.ServerAuth | certs.ClientAuth,
		KeyType:    certs.KeyECDSA,
		TTL:        24 * time.Hour,
	})
	if err != nil {
		return fmt.Errorf("NATS server certificate: %w", err)
	}
	client, err := ca.Issue(certs.Request{CommonName: "teleport-event-bus client", Usage: certs.ClientAuth, KeyType: certs.KeyECDSA, TTL: 24 * time.Hour})
	if err != nil {
		return fmt.Errorf("NATS client certificate: %w", err)
	}
	tlsDir := filepath.Join(c.Dir, "tls")
	c.CA = filepath.Join(tlsDir, "ca.crt")
	c.ClientCert = filepath.Join(tlsDir, "client.crt")
	c.ClientKey = filepath.Join(tlsDir, "client.key")
	files := map[string][]byte{
		c.CA:                                ca.CertPEM,
		filepath.Join(tlsDir, "server.crt"): server.CertPEM,
		filepath.Join(tlsDir, "server.key"): server.KeyPEM,
		c.ClientCert:                        client.CertPEM,
		c.ClientKey:                         client.KeyPEM,
	}
	for path, data := range files {
		if err := certs.WriteFile(path, data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// nodeNumber is N for node-N.conf.
func nodeNumber(file string) (int, bool) {
	s, ok := strings.CutPrefix(file, "node-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSuffix(s, ".conf"))
	return n, err == nil
}

// replaceAll applies old/new pairs, failing on an old string the text
// lacks. Pairs that only apply to some files (the TLS directory) may be
// absent.
func replaceAll(s string, pairs []string) (string, error) {
	for i := 0; i+1 < len(pairs); i += 2 {
		old, repl := pairs[i], pairs[i+1]
		if !strings.Contains(s, old) {
			if old == "/etc/nats/tls/" {
				continue
			}
			return "", fmt.Errorf("no longer contains %q (update test/harness/natscluster.go)", old)
		}
		s = strings.ReplaceAll(s, old, repl)
	}
	return s, nil
}

// freePorts picks n distinct free TCP ports on 127.0.0.1 with FreePort. The
// cluster's nodes must know each other's route ports before they start, so
// port 0 cannot be used; ports below the ephemeral range also stay free for
// a node restarted after a kill.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	seen := make(map[int]bool, n)
	for len(ports) < n {
		p, err := FreePort()
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return hex.EncodeToString(b), nil
}
