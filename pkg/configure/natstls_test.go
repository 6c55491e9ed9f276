package configure

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// TestNATSClusterFiles: configure --nats-cluster writes, from its one CA,
// a certificate per node valid for server and client use with the node's
// names, its key unencrypted and 0600, the node's configuration, and
// accounts.conf admitting exactly the public keys of the seeds it wrote —
// and points the TOML at the cluster.
func TestNATSClusterFiles(t *testing.T) {
	nodes, err := ParseClusterNodes([]string{"nats-1", "nats-2=10.0.0.2", "nats-3=nats3.example.com:5222"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir, KeyType: certs.KeyECDSA, NATSCluster: nodes, NATSConfDir: "/etc/nats"}); err != nil {
		t.Fatal(err)
	}
	cluster := filepath.Join(dir, NATSClusterDir)
	pool, err := certs.LoadCertPool(filepath.Join(cluster, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	wantNames := map[string][]string{"nats-1": {"nats-1"}, "nats-2": {"nats-2", "10.0.0.2"}, "nats-3": {"nats-3", "nats3.example.com"}}
	for _, n := range nodes {
		pair, err := certs.LoadKeyPair(filepath.Join(cluster, n.CertFile()), filepath.Join(cluster, n.KeyFile()), nil)
		if err != nil {
			t.Fatalf("%s: an unencrypted key nats-server can read: %v", n.Name, err)
		}
		if st, err := os.Stat(filepath.Join(cluster, n.KeyFile())); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: key mode %v, want 0600", n.Name, st.Mode().Perm())
		}
		block, _ := pem.Decode([]byte(read(t, filepath.Join(cluster, n.KeyFile()))))
		if block == nil || strings.Contains(block.Type, "ENCRYPTED") {
			t.Errorf("%s: key is not unencrypted PEM", n.Name)
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s: not valid for usage %v (routes need server and client): %v", n.Name, usage, err)
			}
		}
		for _, name := range wantNames[n.Name] {
			if err := pair.Leaf.VerifyHostname(name); err != nil {
				t.Errorf("%s: certificate not valid for %s: %v", n.Name, name, err)
			}
		}
		conf := read(t, filepath.Join(cluster, n.ConfFile()))
		for _, want := range []string{"server_name: " + n.Name, `cert_file: "/etc/nats/` + n.CertFile() + `"`, "verify: true", "include ./accounts.conf"} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s.conf lacks %q", n.Name, want)
			}
		}
	}
	if conf := read(t, filepath.Join(cluster, "nats-3.conf")); !strings.Contains(conf, "nats-route://10.0.0.2:6222") || !strings.Contains(conf, "listen: 0.0.0.0:5222") {
		t.Errorf("nats-3.conf: want routes to the others' hosts and its own port:\n%s", conf)
	}
	if conf := read(t, filepath.Join(cluster, "nats-2.conf")); !strings.Contains(conf, "listen: 10.0.0.2:4222") || !strings.Contains(conf, "nats-route://nats3.example.com:7222") {
		t.Errorf("nats-2.conf: want it on its IP and a route to nats-3's port + 2000:\n%s", conf)
	}

	accounts := read(t, filepath.Join(cluster, "accounts.conf"))
	if strings.Contains(strings.ToLower(accounts), "password") {
		t.Error("accounts.conf has a password")
	}
	for _, r := range bus.Roles {
		seed := strings.TrimSpace(read(t, filepath.Join(dir, NATSSeedFile(r))))
		kp, err := nkeys.FromSeed([]byte(seed))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(accounts, "{ nkey: "+pub+", permissions: $") {
			t.Errorf("accounts.conf does not admit the %s seed's public key", r)
		}
		if strings.Contains(accounts, seed) {
			t.Errorf("accounts.conf holds the %s seed", r)
		}
	}

	cfg, err := config.LoadFile(filepath.Join(dir, TOMLFile), config.Sink)
	if err != nil {
		t.Fatal(err)
	}
	wantURL := "tls://nats-1:4222,tls://10.0.0.2:4222,tls://nats3.example.com:5222"
	if cfg.NATS.URL != wantURL || cfg.NATS.CA != filepath.Join(dir, "ca.crt") {
		t.Errorf("TOML [nats] url %q ca %q, want %q and the CA", cfg.NATS.URL, cfg.NATS.CA, wantURL)
	}
	// tctl auth sign writes the identity; ingest's load requires it.
	if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ing, err := config.LoadFile(filepath.Join(dir, TOMLFile), config.Ingest)
	if err != nil {
		t.Fatal(err)
	}
	if ing.NATS.Replicas != 3 {
		t.Errorf("TOML [nats] replicas %d, want 3", ing.NATS.Replicas)
	}
}

// TestParseClusterNodesErrors: a bad --nats-cluster entry is one line
// naming it and the form to use.
func TestParseClusterNodesErrors(t *testing.T) {
	for in, want := range map[string]string{
		"nats_1,b,c":                 `--nats-cluster "nats_1": the node name must be a DNS label`,
		"a,a,b":                      `--nats-cluster: node "a" is listed twice`,
		"a=h:70000,b,c":              `--nats-cluster "a=h:70000": port "70000" must be a number from 1 to 61535`,
		"a=h:4222,b=h:4222,c":        `--nats-cluster "b=h:4222": another node has the address h:4222`,
		"a,b":                        "--nats-cluster lists 2 node(s): a JetStream cluster needs at least 3",
		"ca,b,c":                     `--nats-cluster "ca": the node name must be a DNS label`,
		"a=127.0.0.1:4222,b=h,c=/x/": `--nats-cluster "c=/x/": bad host "/x/"`,
	} {
		_, err := ParseClusterNodes(strings.Split(in, ","))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: got %v, want %s…", in, err, want)
		}
	}
	if got, err := ParseClusterNodes(nil); err != nil || len(got) != 0 {
		t.Errorf("no cluster: %v %v", got, err)
	}
}
