package configure

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// The --forward variant: Fluentd's in_forward instead of in_http. The
// certificates, the role and the <match> sections are the same; the
// <source> is in_forward with <transport tls> and a <security> section
// with a generated shared key, which the TOML reads from its own file.

// Forward settings of the generated files.
const (
	// DefaultForwardPort is in_forward's port.
	DefaultForwardPort = 24224
	// SharedKeyFile holds the generated shared key (0600); the TOML names
	// it in shared-key-file, fluent.conf carries the key itself.
	SharedKeyFile = "fluentd-shared.key"
	// SinkHostname is the sink's self-hostname in the handshake; it must
	// differ from Fluentd's self_hostname (the server's host name).
	SinkHostname = "teleport-event-bus-sink"
)

// forwardBase is the tls://host:port the sink sends to.
func (p paths) forwardBase() string {
	return "tls://" + net.JoinHostPort(fluentdHost(p.o), strconv.Itoa(DefaultForwardPort))
}

func (p paths) sharedKey() string { return p.file(SharedKeyFile) }

// generateSharedKey is 32 random bytes in hex.
func generateSharedKey() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate shared key: %w", err)
	}
	return []byte(hex.EncodeToString(b)), nil
}

// renderForwardSource is the in_forward <source> for Fluentd >= 1.12.
func renderForwardSource(p paths, serverPass, sharedKey []byte) string {
	return fmt.Sprintf(`<source>
  @type forward
  port %[1]d
  # Only local clients; use 0.0.0.0 to accept the sink from other hosts.
  bind %[2]s

  <transport tls>
    ca_path %[3]s
    cert_path %[4]s
    private_key_path %[5]s
    private_key_passphrase %[6]s
    client_cert_auth true
  </transport>

  # The sink proves it knows the shared key (and checks that Fluentd does)
  # in the HELO/PING/PONG handshake before it sends events.
  <security>
    self_hostname %[7]s
    shared_key %[8]s
  </security>
</source>
`, DefaultForwardPort, DefaultFluentdBind,
		fluentString(p.caCert()), fluentString(p.serverCert()), fluentString(p.serverKey()),
		fluentString(string(serverPass)), fluentString(fluentdHost(p.o)), fluentString(string(sharedKey)))
}

// renderForwardConf is fluent.conf with in_forward as its source: the
// in_http configuration with its <source> replaced. Times need no <parse>
// section: each event carries its time as an EventTime.
func renderForwardConf(p paths, serverPass, sharedKey []byte) ([]byte, error) {
	conf, err := renderFluentConf(p, serverPass)
	if err != nil {
		return nil, err
	}
	start := bytes.Index(conf, []byte("<source>"))
	end := bytes.Index(conf, []byte("</source>\n"))
	if start < 0 || end < start {
		return nil, fmt.Errorf("fluent.conf template has no <source> section")
	}
	var b bytes.Buffer
	b.WriteString(strings.Replace(string(conf[:start]), "Fluentd >= 1.12.4 (TLS in in_http)", "Fluentd >= 1.12 (in_forward with TLS client certificates)", 1))
	b.WriteString(renderForwardSource(p, serverPass, sharedKey))
	b.Write(conf[end+len("</source>\n"):])
	return b.Bytes(), nil
}

// renderForwardTOML is the TOML with the in_forward URLs, the shared-key
// file and the sink's self-hostname.
func renderForwardTOML(p paths) ([]byte, error) {
	toml := string(renderTOML(p))
	httpURLs := fmt.Sprintf("url = %s\n# Each session's events go to <session-url>.<session id>.log.\nsession-url = %s\n",
		tomlString(p.fluentdBase()+"/test.log"), tomlString(p.fluentdBase()+"/session"))
	if !strings.Contains(toml, httpURLs) {
		return nil, fmt.Errorf("TOML template has no fluentd URLs")
	}
	fwd := fmt.Sprintf(`# Fluentd's in_forward over TLS; the path is the tag of audit events.
url = %[1]s
# Session events get the tag session.<session id>.log.
session-url = %[2]s
# The shared key of fluent.conf's <security> section.
shared-key-file = %[3]s
# Our name in the handshake; Fluentd's self_hostname must differ.
self-hostname = %[4]s
`, tomlString(p.forwardBase()+"/test.log"), tomlString(p.forwardBase()+"/session"),
		tomlString(p.sharedKey()), tomlString(SinkHostname))
	return []byte(strings.Replace(toml, httpURLs, fwd, 1)), nil
}

// appendForward adds the files of the in_forward variant to outs.
func appendForward(outs []output, o Options, p paths, serverPass []byte) ([]output, error) {
	key, err := generateSharedKey()
	if err != nil {
		return nil, err
	}
	conf, err := renderForwardConf(p, serverPass, key)
	if err != nil {
		return nil, err
	}
	toml, err := renderForwardTOML(p)
	if err != nil {
		return nil, err
	}
	return append(outs,
		output{SharedKeyFile, append(key, '\n'), 0o600},
		output{RoleFile, renderRole(o.Lock), 0o600},
		output{UserFile, renderUser(), 0o600},
		output{FluentConfFile, conf, 0o600},
		output{TOMLFile, toml, 0o600},
	), nil
}
