package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/configure"
)

// The users of the cluster's accounts.conf, named after their roles.
const (
	NATSUserIngest = string(bus.RoleIngest)
	NATSUserSink   = string(bus.RoleSink)
	NATSUserReader = string(bus.RoleReader)
)

// NATSCluster is a 3-node JetStream cluster as `configure --nats-cluster`
// writes it (the generator of deploy/nats), for this machine (127.0.0.1,
// free ports, files under Dir), run as separate nats-server processes.
type NATSCluster struct {
	// Dir holds configure's output (conf/, the cluster's files in
	// conf/nats-cluster), each node's JetStream store (store/<node>) and
	// the logs (logs/).
	Dir string
	// CA verifies the nodes' certificates; ClientCert and ClientKey are a
	// client certificate of the same CA (the nodes ask for none).
	CA, ClientCert, ClientKey string
	// Seeds are the NKey seed files of the users of accounts.conf, by
	// user (role) name.
	Seeds map[string]string
	Nodes []*NATSNode

	bin string
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

// RenderNATSCluster runs configure (the library behind the command) into
// dir/conf with --nats-cluster nats-1=127.0.0.1:P1,… on free ports, the
// stores under dir/store: the files a user gets, used unchanged. Nothing
// is started.
func RenderNATSCluster(dir string) (*NATSCluster, error) {
	nodes, err := ClusterNodeArgs(3)
	if err != nil {
		return nil, err
	}
	parsed, err := configure.ParseClusterNodes(nodes)
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "conf")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("render NATS cluster: %w", err)
	}
	if _, err := configure.Run(context.Background(), configure.Options{
		OutDir: conf, KeyType: certs.KeyECDSA, TTL: 24 * time.Hour,
		NATSCluster: parsed, NATSStoreDir: filepath.Join(dir, "store"),
	}); err != nil {
		return nil, fmt.Errorf("render NATS cluster: configure: %w", err)
	}
	return ClusterFromConfigure(dir, conf, parsed), nil
}

// ClusterFromConfigure describes the cluster configure wrote into conf
// (its <out-dir>) for nodes, with logs under dir/logs.
func ClusterFromConfigure(dir, conf string, nodes []bus.ClusterNode) *NATSCluster {
	c := &NATSCluster{
		Dir: dir, CA: filepath.Join(conf, "ca.crt"),
		ClientCert: filepath.Join(conf, "client.crt"), ClientKey: filepath.Join(conf, "client.key"),
		Seeds: map[string]string{},
	}
	for _, r := range bus.Roles {
		c.Seeds[string(r)] = filepath.Join(conf, configure.NATSSeedFile(r))
	}
	for _, n := range nodes {
		c.Nodes = append(c.Nodes, &NATSNode{
			Name: n.Name, ClientURL: n.ClientURL(), MonitorURL: n.MonitorURL(),
			ConfPath: filepath.Join(conf, configure.NATSClusterDir, n.ConfFile()),
		})
	}
	return c
}

// ClusterNodeArgs are n --nats-cluster entries nats-1=127.0.0.1:PORT, …
// whose client, route (+2000) and monitoring (+4000) ports are all free.
func ClusterNodeArgs(n int) ([]string, error) {
	var out []string
	used := map[int]bool{}
	for attempt := 0; len(out) < n; attempt++ {
		if attempt > 200 {
			return nil, errors.New("no free client, route and monitoring port triple")
		}
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		if used[p] || used[p+bus.RoutePortOffset] || used[p+bus.MonitorPortOffset] ||
			!portFree(p+bus.RoutePortOffset) || !portFree(p+bus.MonitorPortOffset) {
			continue
		}
		for _, q := range []int{p, p + bus.RoutePortOffset, p + bus.MonitorPortOffset} {
			used[q] = true
		}
		out = append(out, fmt.Sprintf("nats-%d=127.0.0.1:%d", len(out)+1, p))
	}
	return out, nil
}

// portFree reports whether 127.0.0.1:port can be listened on now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// StartNATSCluster writes the cluster into dir (see RenderNATSCluster),
// starts the three nodes with the nats-server binary bin, and waits until
// each of them is healthy and a JetStream meta leader is elected. The
// processes are killed when ctx ends.
func StartNATSCluster(ctx context.Context, bin, dir string) (*NATSCluster, error) {
	c, err := RenderNATSCluster(dir)
	if err != nil {
		return nil, err
	}
	return c, c.Run(ctx, bin)
}

// Run starts every node with the nats-server binary bin and waits until
// each is healthy and a JetStream meta leader is elected; on failure it
// stops them. The processes are killed when ctx ends.
func (c *NATSCluster) Run(ctx context.Context, bin string) error {
	c.bin = bin
	for i := range c.Nodes {
		if err := c.Start(ctx, i); err != nil {
			c.Stop()
			return err
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Stop()
		return err
	}
	return nil
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
		LogDir: c.LogDir(),
	})
	if err != nil {
		return err
	}
	n.Proc = p
	return nil
}

// LogDir holds one log file per node.
func (c *NATSCluster) LogDir() string { return filepath.Join(c.Dir, "logs") }

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
// CA, the user's NKey seed, and replicas 3.
func (c *NATSCluster) NATSConfig(user string) config.NATSConfig {
	cfg := config.Default().NATS
	cfg.URL = c.URLs()
	cfg.CA = c.CA
	cfg.Replicas = 3
	if user != "" {
		cfg.NKey = c.Seeds[user]
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
