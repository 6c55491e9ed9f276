package configure

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// fromFileRE is one --from-file=KEY='PATH' of the secrets script.
var fromFileRE = regexp.MustCompile(`--from-file=([^=]+)='([^']*)'`)

// TestHelmFiles: with Helm, configure writes the chart's values for its
// directory, the NATS chart's values with the users of the seeds it wrote,
// and one kubectl command per Secret whose files exist (the identity comes
// later from tctl).
func TestHelmFiles(t *testing.T) {
	for _, forward := range []bool{false, true} {
		dir := t.TempDir()
		res, out, err := run(t, Options{OutDir: dir, TeleportAddr: "teleport.example.com:443", DNSNames: []string{"fluentd.logging.svc"}, Helm: true, Forward: forward})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range helmFileNames {
			if !strings.Contains(out, f) || !slices.Contains(res.Files, filepath.Join(res.Dir, f)) {
				t.Errorf("forward=%v: %s not written or not in the summary", forward, f)
			}
		}

		var values struct {
			Teleport struct {
				Address string `yaml:"address"`
			} `yaml:"teleport"`
			Fluentd struct {
				URL     string `yaml:"url"`
				Forward struct {
					URL string `yaml:"url"`
				} `yaml:"forward"`
			} `yaml:"fluentd"`
		}
		if err := yaml.Unmarshal([]byte(read(t, filepath.Join(dir, HelmValuesFile))), &values); err != nil {
			t.Fatalf("%s: %v", HelmValuesFile, err)
		}
		wantURL, gotURL := "https://fluentd.logging.svc:8888/test.log", values.Fluentd.URL
		if forward {
			wantURL, gotURL = "tls://fluentd.logging.svc:24224/test.log", values.Fluentd.Forward.URL
		}
		if values.Teleport.Address != "teleport.example.com:443" || gotURL != wantURL {
			t.Errorf("forward=%v: values give teleport.address %q and the Fluentd URL %q, want teleport.example.com:443 and %q", forward, values.Teleport.Address, gotURL, wantURL)
		}

		script := read(t, filepath.Join(dir, SecretsScriptFile))
		secrets := map[string]bool{}
		for _, line := range strings.Split(script, "\n") {
			if !strings.HasPrefix(line, "kubectl ") {
				continue
			}
			name := strings.Fields(line)[6]
			secrets[name] = true
			for _, m := range fromFileRE.FindAllStringSubmatch(line, -1) {
				wantKey := filepath.Base(m[2])
				if name == SecretNATSServer { // the NATS chart reads tls.crt and tls.key
					wantKey = map[string]string{NATSChartCertFile: "tls.crt", NATSChartKeyFile: "tls.key"}[wantKey]
				}
				if m[1] != wantKey || filepath.Dir(m[2]) != res.Dir {
					t.Errorf("%s: key %q from %q: want the key named as the file, in %s", name, m[1], m[2], res.Dir)
				}
				if _, err := os.Stat(m[2]); err != nil && m[1] != IdentityFile {
					t.Errorf("%s: key %q: %v", name, m[1], err)
				}
			}
		}
		want := []string{SecretIdentity, SecretFluentdClient, SecretNATSTLS, SecretNATSServer, SecretNATSNKeys}
		if forward {
			want = append(want, SecretSharedKey)
		}
		for _, s := range want {
			if !secrets[s] {
				t.Errorf("forward=%v: the script creates no Secret %s:\n%s", forward, s, script)
			}
		}
		if len(secrets) != len(want) {
			t.Errorf("forward=%v: the script creates %d Secrets, want %d:\n%s", forward, len(secrets), len(want), script)
		}
	}
}

// TestNATSChartValuesUsers: nats-values.yaml admits exactly the public keys
// of the users file configure wrote, each with its role's permissions.
func TestNATSChartValuesUsers(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir, Helm: true}); err != nil {
		t.Fatal(err)
	}
	users, err := bus.LoadUsers(filepath.Join(dir, NATSUsersFile))
	if err != nil {
		t.Fatal(err)
	}
	var v natsChartValues
	if err := yaml.Unmarshal([]byte(read(t, filepath.Join(dir, NATSChartValuesFile))), &v); err != nil {
		t.Fatal(err)
	}
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 || !v.Config.JetStream.FileStore.Enabled || !v.Config.NATS.TLS.Enabled || !v.Config.Cluster.TLS.Enabled {
		t.Errorf("want a TLS cluster of 3 with JetStream file storage, got %+v", v.Config)
	}
	got, err := yaml.Marshal(v.Config.Merge.Authorization)
	if err != nil {
		t.Fatal(err)
	}
	want, err := yaml.Marshal(bus.AuthorizationValues(users, bus.NamesFor(config.Default().NATS, config.Default().Sink)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config.merge.authorization is not the users file's users with their roles:\n%s\nwant:\n%s", got, want)
	}
}

func TestHelmRefusesEncryptedClientKey(t *testing.T) {
	dir := t.TempDir()
	_, _, err := run(t, Options{OutDir: dir, Helm: true, EncryptClientKey: true})
	if err == nil || !strings.Contains(err.Error(), "--helm and --encrypt-client-key") {
		t.Fatalf("got %v, want an error naming --helm and --encrypt-client-key", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("files were written: %d", len(entries))
	}
}
