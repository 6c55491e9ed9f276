// Package configure is the library behind the `configure` command: it makes
// the mTLS material for the sink → Fluentd link (CA, server and client
// certificates), NATS credentials for the bus's roles (an NKey seed per
// role and the embedded server's users file, natscreds.go), the Teleport
// role and user the ingest signs in as, a
// fluent.conf for Fluentd's in_http on TLS, and a teleport-event-handler.toml
// that all three commands read. It writes files in the layout of the older
// teleport-event-handler `configure`, so its users find them where they expect.
package configure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

// Defaults for the zero fields of Options.
const (
	DefaultTeleportAddr = "localhost:3025"
	// DefaultTTL is the older tool's certificate lifetime (ten years).
	DefaultTTL              = 87600 * time.Hour
	DefaultCACommonName     = "Teleport Event Bus CA"
	DefaultClientCommonName = "teleport-event-handler"
	// DefaultFluentdPort is in_http's port in fluent.conf and in the URLs.
	DefaultFluentdPort = 8888
	// DefaultFluentdBind is in_http's listen address: local only until the
	// user opens it on purpose.
	DefaultFluentdBind = "127.0.0.1"
)

// Names of the files Run writes besides the certificates and keys.
const (
	RoleFile           = "teleport-event-handler-role.yaml"
	UserFile           = "teleport-event-handler-user.yaml"
	FluentConfFile     = "fluent.conf"
	TOMLFile           = "teleport-event-handler.toml"
	IdentityFile       = "identity"
	ClientPassFileName = "client.key.pass"
	// RoleName is the Teleport role and user the ingest signs in as.
	RoleName = "teleport-event-handler"
)

// Options says what Run generates. Only OutDir is required.
type Options struct {
	// OutDir receives every file; it is created (0700) when missing.
	OutDir string
	// TeleportAddr goes into the TOML's [teleport] addr (default
	// DefaultTeleportAddr).
	TeleportAddr string
	// TTL is the certificates' lifetime (default DefaultTTL).
	TTL time.Duration
	// DNSNames and IPs are the server certificate's subjectAltNames, the
	// names the sink may use for Fluentd. With neither set: localhost and
	// 127.0.0.1.
	DNSNames []string
	IPs      []net.IP
	// KeyType defaults to RSA; RSABits to 2048 (2048, 3072 or 4096).
	KeyType certs.KeyType
	RSABits int
	// EncryptClientKey encrypts client.key too, with a generated passphrase
	// kept in client.key.pass (0600) and named in the TOML.
	EncryptClientKey bool
	// Force overwrites existing files; without it Run changes nothing when
	// any of its files exists.
	Force bool
	// Lock lets the Teleport role create and update locks.
	Lock bool
	// Forward configures Fluentd's in_forward (TLS, shared key) instead of
	// in_http: fluent.conf's <source>, the TOML's URLs, and a generated
	// shared key in SharedKeyFile.
	Forward bool
	// Helm also writes HelmValuesFile, NATSChartValuesFile and
	// SecretsScriptFile (helm.go).
	Helm bool
	// CACommonName, ServerCommonName and ClientCommonName are the subjects'
	// common names (defaults DefaultCACommonName, the first DNS name or IP,
	// DefaultClientCommonName).
	CACommonName, ServerCommonName, ClientCommonName string
	// CAName, ServerName and ClientName are the base names of the
	// certificate and key files, the older tool's three name arguments
	// (defaults "ca", "server", "client").
	CAName, ServerName, ClientName string
	// Stdin supplies server.key's passphrase when StdinIsTerminal is false;
	// otherwise (or when nil) the passphrase is generated.
	Stdin           io.Reader
	StdinIsTerminal bool
	// NATSNames are the DNS names and IPs of the embedded NATS server's
	// certificate (nats-server.crt), the names other hosts reach it by
	// (default: localhost and 127.0.0.1).
	NATSNames []string
	// NATSCluster, when set (3 nodes or more, ParseClusterNodes), makes
	// the cluster's directory (NATSClusterDir) and points the TOML at it.
	NATSCluster []bus.ClusterNode
	// NATSConfDir is where the cluster's files will be on each node (the
	// configurations name their TLS files by absolute path); default: the
	// written directory itself. NATSStoreDir is the parent of each node's
	// JetStream directory (default DefaultNATSStoreDir).
	NATSConfDir, NATSStoreDir string
	// Out receives the summary (nil discards it). The passphrase never
	// appears there.
	Out io.Writer
}

// Result says what Run wrote.
type Result struct {
	// Dir is the absolute output directory.
	Dir string
	// Files are the absolute paths written, in order.
	Files []string
	// PassphraseFromStdin is true when server.key's passphrase was read
	// from Stdin rather than generated.
	PassphraseFromStdin bool
}

// maxPassphrase bounds what is read from stdin.
const maxPassphrase = 1024

// output is one file to write.
type output struct {
	name string
	data []byte
	mode os.FileMode
}

// Run generates everything in memory, checks that no target exists (unless
// Force), then writes the files and prints a summary to opts.Out.
func Run(ctx context.Context, opts Options) (Result, error) {
	o, err := withDefaults(opts)
	if err != nil {
		return Result{}, err
	}
	dir, err := filepath.Abs(o.OutDir)
	if err != nil {
		return Result{}, fmt.Errorf("output directory %q: %w", o.OutDir, err)
	}
	if o.NATSConfDir == "" {
		o.NATSConfDir = filepath.Join(dir, NATSClusterDir)
	}
	names := fileNames(o)
	if !o.Force {
		if err := refuseExisting(dir, names); err != nil {
			return Result{}, err
		}
	}
	pass, fromStdin, err := serverPassphrase(o)
	if err != nil {
		return Result{}, err
	}
	outs, err := generate(ctx, o, dir, pass)
	if err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Result{}, fmt.Errorf("create output directory: %w", err)
	}
	res := Result{Dir: dir, PassphraseFromStdin: fromStdin}
	for _, out := range outs {
		path := filepath.Join(dir, out.name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return res, fmt.Errorf("create directory for %s: %w", out.name, err)
		}
		if err := certs.WriteFile(path, out.data, out.mode); err != nil {
			return res, err
		}
		res.Files = append(res.Files, path)
	}
	if err := printSummary(o, res); err != nil {
		return res, fmt.Errorf("print summary: %w", err)
	}
	return res, nil
}

func withDefaults(o Options) (Options, error) {
	if o.OutDir == "" {
		return o, errors.New("output directory is required")
	}
	if o.TeleportAddr == "" {
		o.TeleportAddr = DefaultTeleportAddr
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.TTL < time.Hour {
		return o, fmt.Errorf("certificate TTL %s is too short (minimum 1h)", o.TTL)
	}
	if len(o.DNSNames) == 0 && len(o.IPs) == 0 {
		o.DNSNames = []string{"localhost"}
		o.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	switch o.KeyType {
	case "":
		o.KeyType = certs.KeyRSA
	case certs.KeyRSA, certs.KeyECDSA:
	default:
		return o, fmt.Errorf("key type %q: want %q or %q", o.KeyType, certs.KeyRSA, certs.KeyECDSA)
	}
	switch o.RSABits {
	case 0:
		o.RSABits = certs.DefaultRSABits
	case 2048, 3072, 4096:
	default:
		return o, fmt.Errorf("RSA key length %d: want 2048, 3072 or 4096", o.RSABits)
	}
	if o.CACommonName == "" {
		o.CACommonName = DefaultCACommonName
	}
	if o.ServerCommonName == "" {
		o.ServerCommonName = fluentdHost(o)
	}
	if o.ClientCommonName == "" {
		o.ClientCommonName = DefaultClientCommonName
	}
	for _, n := range []struct {
		p    *string
		def  string
		what string
	}{{&o.CAName, "ca", "CA"}, {&o.ServerName, "server", "server"}, {&o.ClientName, "client", "client"}} {
		if *n.p == "" {
			*n.p = n.def
		}
		if *n.p != filepath.Base(*n.p) || strings.HasPrefix(*n.p, ".") {
			return o, fmt.Errorf("%s file name %q must be a plain base name", n.what, *n.p)
		}
	}
	if o.CAName == o.ServerName || o.CAName == o.ClientName || o.ServerName == o.ClientName {
		return o, fmt.Errorf("CA, server and client file names must differ (got %q, %q, %q)", o.CAName, o.ServerName, o.ClientName)
	}
	if len(o.NATSNames) == 0 && o.Helm {
		o.NATSNames = helmNATSNames
	}
	if len(o.NATSNames) == 0 {
		o.NATSNames = []string{"localhost", "127.0.0.1"}
	}
	if o.NATSStoreDir == "" {
		o.NATSStoreDir = DefaultNATSStoreDir
	}
	for _, d := range []struct{ name, v string }{{"--nats-conf-dir", o.NATSConfDir}, {"--nats-store-dir", o.NATSStoreDir}} {
		if d.v != "" && !filepath.IsAbs(d.v) {
			return o, fmt.Errorf("%s %q must be an absolute path (nats-server resolves relative ones from its working directory)", d.name, d.v)
		}
	}
	if o.Helm && o.EncryptClientKey {
		return o, errors.New("--helm and --encrypt-client-key: the chart mounts the sink's client key as a Secret and names no passphrase; drop --encrypt-client-key (the Secret protects the key)")
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return o, nil
}

// fluentdHost is the host the sink dials: the first DNS name, else the first IP.
func fluentdHost(o Options) string {
	if len(o.DNSNames) > 0 {
		return o.DNSNames[0]
	}
	return o.IPs[0].String()
}

// fileNames lists every file Run writes, in writing order.
func fileNames(o Options) []string {
	names := []string{
		o.CAName + ".crt", o.CAName + ".key",
		o.ServerName + ".crt", o.ServerName + ".key",
		o.ClientName + ".crt", o.ClientName + ".key",
	}
	if o.EncryptClientKey {
		names = append(names, o.ClientName+".key.pass")
	}
	names = append(names, natsFileNames()...)
	names = append(names, natsTLSFileNames(o)...)
	if o.Forward {
		names = append(names, SharedKeyFile)
	}
	names = append(names, RoleFile, UserFile, FluentConfFile, TOMLFile)
	if o.Helm {
		names = append(names, helmFileNames...)
	}
	return names
}

// refuseExisting fails naming every target that already exists.
func refuseExisting(dir string, names []string) error {
	var existing []string
	for _, n := range names {
		path := filepath.Join(dir, n)
		_, err := os.Lstat(path)
		switch {
		case err == nil:
			existing = append(existing, path)
		case errors.Is(err, fs.ErrNotExist):
		default:
			return fmt.Errorf("check %q: %w", path, err)
		}
	}
	if len(existing) > 0 {
		return fmt.Errorf("refusing to overwrite existing files (use --force): %s", strings.Join(existing, ", "))
	}
	return nil
}

// generate makes the contents of every file.
func generate(ctx context.Context, o Options, dir string, serverPass []byte) ([]output, error) {
	base := certs.Request{KeyType: o.KeyType, RSABits: o.RSABits, TTL: o.TTL}
	caReq := base
	caReq.CommonName = o.CACommonName
	ca, err := certs.NewCA(caReq)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	serverReq := base
	serverReq.CommonName, serverReq.DNSNames, serverReq.IPs, serverReq.Usage = o.ServerCommonName, o.DNSNames, o.IPs, certs.ServerAuth
	server, err := ca.Issue(serverReq)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	clientReq := base
	clientReq.CommonName, clientReq.Usage = o.ClientCommonName, certs.ClientAuth
	client, err := ca.Issue(clientReq)
	if err != nil {
		return nil, err
	}
	serverKey, err := certs.EncryptKeyPEM(server.Key, serverPass)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	outs := []output{
		{o.CAName + ".crt", ca.CertPEM, 0o644},
		{o.CAName + ".key", ca.KeyPEM, 0o600},
		{o.ServerName + ".crt", server.CertPEM, 0o644},
		{o.ServerName + ".key", serverKey, 0o600},
		{o.ClientName + ".crt", client.CertPEM, 0o644},
	}
	p := paths{dir: dir, o: o}
	if o.EncryptClientKey {
		clientPass, err := generatePassphrase()
		if err != nil {
			return nil, err
		}
		clientKey, err := certs.EncryptKeyPEM(client.Key, clientPass)
		if err != nil {
			return nil, fmt.Errorf("client key: %w", err)
		}
		outs = append(outs, output{o.ClientName + ".key", clientKey, 0o600},
			output{o.ClientName + ".key.pass", append(clientPass, '\n'), 0o600})
	} else {
		outs = append(outs, output{o.ClientName + ".key", client.KeyPEM, 0o600})
	}
	natsOuts, users, err := natsCredentials()
	if err != nil {
		return nil, err
	}
	outs = append(outs, natsOuts...)
	tlsOuts, err := natsTLS(o, ca, base, users)
	if err != nil {
		return nil, err
	}
	outs = append(outs, tlsOuts...)
	if o.Forward {
		outs, err = appendForward(outs, o, p, serverPass)
	} else {
		outs, err = appendHTTP(outs, o, p, serverPass)
	}
	if err != nil || !o.Helm {
		return outs, err
	}
	helm, err := helmOutputs(p, outs, users, ca, base)
	if err != nil {
		return nil, err
	}
	return append(outs, helm...), nil
}

// appendHTTP adds the files of the in_http configuration to outs.
func appendHTTP(outs []output, o Options, p paths, serverPass []byte) ([]output, error) {
	fluentConf, err := renderFluentConf(p, serverPass)
	if err != nil {
		return nil, err
	}
	return append(outs,
		output{RoleFile, renderRole(o.Lock), 0o600},
		output{UserFile, renderUser(), 0o600},
		output{FluentConfFile, fluentConf, 0o600},
		output{TOMLFile, renderTOML(p), 0o600},
	), nil
}
