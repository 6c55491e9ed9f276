package configure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// The --helm variant: the same files, plus what Kubernetes needs. The
// chart (deploy/helm/teleport-event-bus) reads the values file; the
// Secrets it names are made by the script from the files written here, one
// `kubectl create secret` per Secret, with the keys the values give; and
// nats-values.yaml installs the official NATS chart as the external
// cluster, with the NKey users of the seeds written here and the
// permissions of their roles (bus.AuthorizationValues).

// Files written with Options.Helm.
const (
	HelmValuesFile      = "teleport-event-bus-values.yaml"
	NATSChartValuesFile = "nats-values.yaml"
	SecretsScriptFile   = "teleport-event-bus-secrets.sh"
	// HelmNamespace is the namespace the script and the commands use
	// unless NAMESPACE is set.
	HelmNamespace = "teleport-event-bus"
)

// NATSChartCertFile and NATSChartKeyFile are the NATS chart's server
// certificate and key: one pair for the 3 pods, for clients and routes
// (server and client auth), with the names the chart's Services give them.
const (
	NATSChartCertFile = "nats-chart-server.crt"
	NATSChartKeyFile  = "nats-chart-server.key"
)

var helmFileNames = []string{NATSChartCertFile, NATSChartKeyFile, HelmValuesFile, NATSChartValuesFile, SecretsScriptFile}

// helmRelease is the release name of the commands configure prints: with
// it the chart's objects are named teleport-event-bus-*.
const helmRelease = "teleport-event-bus"

// helmNATSNames are the names of the embedded server's certificate with
// --helm and no --nats-names: the chart's NATS Service (the sinks dial it)
// and loopback.
var helmNATSNames = []string{helmRelease + "-nats." + HelmNamespace + ".svc", "localhost", "127.0.0.1"}

// natsChartNames are the names of the NATS chart's servers, released as
// "nats" in HelmNamespace: each pod behind the headless Service (routes use
// the short form) and the client Service.
var natsChartNames = []string{
	"*.nats-headless", "*.nats-headless." + HelmNamespace + ".svc", "*.nats-headless." + HelmNamespace + ".svc.cluster.local",
	"nats", "nats." + HelmNamespace, "nats." + HelmNamespace + ".svc", "nats." + HelmNamespace + ".svc.cluster.local",
}

// The Secrets the values name. The chart's defaults for the NATS ones are
// the same names, so a values file of teleport-plugin-event-handler's
// chart finds them too.
const (
	SecretIdentity      = "teleport-event-bus-identity"
	SecretFluentdClient = "teleport-event-bus-fluentd-client"
	SecretSharedKey     = "teleport-event-bus-fluentd-shared-key"
	SecretNATSTLS       = "teleport-event-bus-nats-tls"
	SecretNATSNKeys     = "teleport-event-bus-nats-nkeys"
)

// secretKey is one key of a Secret and the file it is made from.
type secretKey struct{ key, file string }

// helmSecret is one Secret of the values and its keys.
type helmSecret struct {
	name string
	keys []secretKey
}

// helmSecrets are the Secrets the values name, each key made from the file
// of the same base name. Only the files written (and the identity, which
// `tctl auth sign` writes into the directory) are named.
func helmSecrets(p paths, written map[string]bool) []helmSecret {
	fileKey := func(name string) secretKey { return secretKey{name, p.file(name)} }
	out := []helmSecret{
		{SecretIdentity, []secretKey{fileKey(IdentityFile)}},
		{SecretFluentdClient, []secretKey{
			fileKey(filepath.Base(p.caCert())), fileKey(filepath.Base(p.clientCert())), fileKey(filepath.Base(p.clientKey())),
		}},
	}
	if written[SharedKeyFile] {
		out = append(out, helmSecret{SecretSharedKey, []secretKey{fileKey(SharedKeyFile)}})
	}
	out = append(out,
		helmSecret{SecretNATSTLS, []secretKey{fileKey(filepath.Base(p.caCert())), fileKey(NATSServerCertFile), fileKey(NATSServerKeyFile)}},
		helmSecret{SecretNATSServer, []secretKey{{"tls.crt", p.file(NATSChartCertFile)}, {"tls.key", p.file(NATSChartKeyFile)}}},
	)
	nkeys := helmSecret{name: SecretNATSNKeys}
	for _, r := range []bus.Role{bus.RoleIngest, bus.RoleSink} {
		nkeys.keys = append(nkeys.keys, fileKey(NATSSeedFile(r)))
	}
	nkeys.keys = append(nkeys.keys, fileKey(NATSUsersFile))
	return append(out, nkeys)
}

// helmOutputs are the --helm files, for the files in outs: the NATS
// chart's certificate, issued by ca, and the three texts.
func helmOutputs(p paths, outs []output, users []bus.User, ca *certs.CA, base certs.Request) ([]output, error) {
	written := map[string]bool{}
	for _, o := range outs {
		written[o.name] = true
	}
	natsValues, err := renderNATSChartValues(users)
	if err != nil {
		return nil, err
	}
	req := base
	req.CommonName, req.DNSNames, req.Usage = "nats", natsChartNames, certs.ServerAuth|certs.ClientAuth
	pair, err := ca.Issue(req)
	if err != nil {
		return nil, fmt.Errorf("NATS chart certificate: %w", err)
	}
	return []output{
		{NATSChartCertFile, pair.CertPEM, 0o644},
		{NATSChartKeyFile, pair.KeyPEM, 0o600},
		{HelmValuesFile, renderHelmValues(p, written[SharedKeyFile]), 0o600},
		{NATSChartValuesFile, natsValues, 0o600},
		{SecretsScriptFile, renderSecretsScript(p, helmSecrets(p, written)), 0o600},
	}, nil
}

// yamlString quotes s as a YAML double-quoted scalar (JSON's escapes are
// YAML's).
func yamlString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return `""` // a string always encodes
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// renderHelmValues is teleport-event-bus-values.yaml: this directory's
// settings in the chart's keys, and the Secrets by name.
func renderHelmValues(p paths, forward bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `# Values of the teleport-event-bus chart (deploy/helm/teleport-event-bus),
# written by configure for the files in %[1]s. Create the Secrets, then
# install:
#   sh %[2]s
#   helm install teleport-event-bus deploy/helm/teleport-event-bus -n %[3]s -f %[4]s
# Every key is described in the chart's values.yaml.
teleport:
  address: %[5]s
  # tctl auth sign --format=file --user=%[6]s --out=%[7]s
  identitySecretName: %[8]s
  identitySecretPath: %[9]s
fluentd:
`, p.dir, p.file(SecretsScriptFile), HelmNamespace, p.file(HelmValuesFile),
		yamlString(p.o.TeleportAddr), RoleName, p.identity(), SecretIdentity, IdentityFile)
	if forward {
		fmt.Fprintf(&b, `  forward:
    url: %[1]s
    sessionUrl: %[2]s
    sharedKeySecretName: %[3]s
    sharedKeyPath: %[4]s
    selfHostname: %[5]s
`, yamlString(p.forwardBase()+"/test.log"), yamlString(p.forwardBase()+"/session"), SecretSharedKey, SharedKeyFile, yamlString(SinkHostname))
	} else {
		fmt.Fprintf(&b, "  url: %s\n  sessionUrl: %s\n",
			yamlString(p.fluentdBase()+"/test.log"), yamlString(p.fluentdBase()+"/session"))
	}
	fmt.Fprintf(&b, `  # The sink's client certificate for Fluentd's mTLS.
  certificate:
    secretName: %[1]s
    caPath: %[2]s
    certPath: %[3]s
    keyPath: %[4]s
nats:
  # Empty: ingest runs the embedded NATS server (one pod, storage on a
  # PersistentVolumeClaim). For the NATS cluster of %[5]s (helm install
  # nats nats/nats -n %[6]s -f %[7]s):
  # url: tls://nats.%[6]s.svc:4222
  url: ""
  # The CA the sinks (and ingest) verify the NATS servers with.
  tls:
    secretName: %[8]s
    caPath: %[2]s
    # The embedded server's certificate and key (valid for %[13]s).
    certPath: %[14]s
    keyPath: %[15]s
  # The NKey seed of each role and the embedded server's users file.
  nkeys:
    secretName: %[9]s
    ingestPath: %[10]s
    sinkPath: %[11]s
    usersPath: %[12]s
`, SecretFluentdClient, filepath.Base(p.caCert()), filepath.Base(p.clientCert()), filepath.Base(p.clientKey()),
		NATSChartValuesFile, HelmNamespace, p.file(NATSChartValuesFile),
		SecretNATSTLS, SecretNATSNKeys, NATSSeedFile(bus.RoleIngest), NATSSeedFile(bus.RoleSink), NATSUsersFile,
		strings.Join(p.o.NATSNames, ", "), NATSServerCertFile, NATSServerKeyFile)
	return b.Bytes()
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// renderSecretsScript is the kubectl commands that create the Secrets.
func renderSecretsScript(p paths, secrets []helmSecret) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `#!/bin/sh
# Creates the Kubernetes Secrets %[1]s names, from the
# files configure wrote in %[2]s (written by configure). Sign the identity
# first: tctl auth sign --format=file --user=%[3]s --out=%[4]s
# Run: NAMESPACE=%[5]s sh %[6]s
set -eu
ns="${NAMESPACE:-%[5]s}"
`, HelmValuesFile, p.dir, RoleName, p.identity(), HelmNamespace, p.file(SecretsScriptFile))
	for _, s := range secrets {
		b.WriteString(`kubectl -n "$ns" create secret generic ` + s.name)
		for _, k := range s.keys {
			b.WriteString(" --from-file=" + k.key + "=" + shellQuote(k.file))
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// NATSChartVersion is the version of the official NATS chart (nats-io/k8s,
// chart nats) whose values layout nats-values.yaml follows.
const NATSChartVersion = "1.3.16"

// natsChartValues is nats-values.yaml, in the order it is written.
type natsChartValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool         `yaml:"enabled"`
			Replicas int          `yaml:"replicas"`
			TLS      natsChartTLS `yaml:"tls"`
		} `yaml:"cluster"`
		JetStream struct {
			Enabled   bool `yaml:"enabled"`
			FileStore struct {
				Enabled bool `yaml:"enabled"`
				PVC     struct {
					Enabled bool   `yaml:"enabled"`
					Size    string `yaml:"size"`
				} `yaml:"pvc"`
			} `yaml:"fileStore"`
		} `yaml:"jetstream"`
		NATS struct {
			TLS natsChartTLS `yaml:"tls"`
		} `yaml:"nats"`
		Merge struct {
			Authorization map[string]any `yaml:"authorization"`
		} `yaml:"merge"`
	} `yaml:"config"`
	TLSCA struct {
		Enabled    bool   `yaml:"enabled"`
		SecretName string `yaml:"secretName"`
		Key        string `yaml:"key"`
	} `yaml:"tlsCA"`
	// NATSBox is off: the chart's toolbox would connect without an NKey.
	NATSBox struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"natsBox"`
}

type natsChartTLS struct {
	Enabled    bool   `yaml:"enabled"`
	SecretName string `yaml:"secretName"`
}

// SecretNATSServer is the NATS chart's server certificate and key (keys
// tls.crt and tls.key, from NATSChartCertFile and NATSChartKeyFile), for
// clients and routes alike.
const SecretNATSServer = "teleport-event-bus-nats-server"

// renderNATSChartValues is nats-values.yaml: 3 servers with JetStream on
// file storage, TLS for clients and routes, and the users of the seeds
// configure wrote with their roles' permissions.
func renderNATSChartValues(users []bus.User) ([]byte, error) {
	var v natsChartValues
	c := &v.Config
	c.Cluster.Enabled, c.Cluster.Replicas = true, 3
	c.Cluster.TLS = natsChartTLS{Enabled: true, SecretName: SecretNATSServer}
	c.JetStream.Enabled = true
	c.JetStream.FileStore.Enabled = true
	c.JetStream.FileStore.PVC.Enabled, c.JetStream.FileStore.PVC.Size = true, "10Gi"
	c.NATS.TLS = natsChartTLS{Enabled: true, SecretName: SecretNATSServer}
	c.Merge.Authorization = bus.AuthorizationValues(users, bus.NamesFor(config.Default().NATS, config.Default().Sink))
	v.TLSCA.Enabled, v.TLSCA.SecretName, v.TLSCA.Key = true, SecretNATSTLS, "ca.crt"
	body, err := yaml.Marshal(&v)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", NATSChartValuesFile, err)
	}
	header := fmt.Sprintf(`# Values of the official NATS Helm chart (nats-io/k8s, chart nats %[1]s),
# written by configure: 3 servers, JetStream on file storage (R3 streams:
# set nats.streamReplicas 3 in the teleport-event-bus chart), TLS for clients
# and routes, and the NKey users of this directory's seeds with the
# permissions of their roles (pkg/bus Permissions). Do not edit the users:
# run configure again. The Secret %[2]s holds the servers' certificate
# (tls.crt, tls.key: nats-chart-server.crt/.key, for server and client
# auth, naming the release "nats" in %[4]s); %[3]s holds ca.crt.
#   helm repo add nats https://nats-io.github.io/k8s/helm/charts/
#   helm install nats nats/nats --version %[1]s -n %[4]s -f %[5]s
`, NATSChartVersion, SecretNATSServer, SecretNATSTLS, HelmNamespace, NATSChartValuesFile)
	return append([]byte(header), body...), nil
}
