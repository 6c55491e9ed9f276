package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// validate runs the checks of every key of the commands in set, then the
// checks between keys. checkFiles requires named files to exist; required
// requires what the command cannot run without (credentials, a URL).
func (c *Config) validate(set cmdSet, checkFiles, required bool) error {
	for _, k := range keys {
		if k.cmds&set == 0 {
			continue
		}
		if k.check != nil {
			if err := k.check(c, k); err != nil {
				return err
			}
		}
		if checkFiles && k.path {
			if err := c.checkFile(k); err != nil {
				return err
			}
		}
		if checkFiles && k.secretFile && k.format(c) != "" {
			if err := CheckSecretFile("file", k.format(c)); err != nil {
				return c.errAt(k, "%s", err)
			}
		}
	}
	if set&forIngest != 0 {
		if err := c.checkTeleportCredentials(required); err != nil {
			return err
		}
	}
	if set&forSink != 0 {
		if err := c.checkFluentd(required); err != nil {
			return err
		}
	}
	if set&(forIngest|forSink) != 0 {
		if err := c.checkNATSAuth(); err != nil {
			return err
		}
	}
	if set&forIngest != 0 {
		if err := c.checkNATSUsers(); err != nil {
			return err
		}
		if err := c.checkNATSServerTLS(); err != nil {
			return err
		}
	}
	return c.checkOneCredential(set)
}

// ownNKey is the key of the command's own NKey seed file ([ingest] or
// [sink] nats-nkey), "" for a set of several commands.
func ownNKey(set cmdSet) string {
	switch set {
	case forIngest:
		return "ingest.nats-nkey"
	case forSink:
		return "sink.nats-nkey"
	}
	return ""
}

// checkOneCredential enforces the one rule of NATS credentials: a command
// logs in one way. Its own NKey ([ingest] or [sink] nats-nkey) with a
// creds file, a user and password or a token, wherever each was set, is an
// error naming both. (It does take precedence over [nats] nkey, the same
// kind of credential: one TOML serves every command.)
func (c *Config) checkOneCredential(set cmdSet) error {
	own := ownNKey(set)
	if own == "" || !c.set(own) {
		return nil
	}
	for _, n := range []string{"nats.creds", "nats.user", "nats.password", "nats.token"} {
		if c.set(n) {
			return c.errAt(byName[n], "conflicts with %q (%s): a command logs in to NATS one way; remove one of them",
				own, describeSource(c.sources[own]))
		}
	}
	return nil
}

// checkNATSServerTLS: the embedded server's certificate and key go
// together, and a listener other hosts can reach serves TLS: NKeys prove
// who a client is, but events and credentials' nonces would cross the
// network in clear.
func (c *Config) checkNATSServerTLS() error {
	if c.set("nats.server-cert") != c.set("nats.server-key") {
		if c.set("nats.server-cert") {
			return c.errAt(byName["nats.server-cert"], "needs \"nats.server-key\" as well")
		}
		return c.errAt(byName["nats.server-key"], "needs \"nats.server-cert\" as well")
	}
	if c.set("nats.url") || c.set("nats.server-cert") {
		return nil
	}
	listen := c.NATS.Listen
	if listen == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil || isLoopback(host) {
		return nil // a bad address is checkHostPort's to report
	}
	return c.errAt(byName["nats.listen"], "%q is not a loopback address, and the embedded server has no TLS: set \"nats.server-cert\" and \"nats.server-key\" (configure <dir> --nats-names <the names clients use> writes nats-server.crt and nats-server.key) and give the clients \"nats.ca\", or listen on 127.0.0.1", listen)
}

// isLoopback reports a host only this machine reaches: localhost, a
// loopback IP, or empty (the embedded server's default, 127.0.0.1).
func isLoopback(host string) bool {
	if host == "" || strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkNATSUsers: an embedded server with a users file admits nobody else,
// ingest included, and takes no token or user besides.
func (c *Config) checkNATSUsers() error {
	if !c.set("nats.users") || c.set("nats.url") {
		return nil
	}
	for _, n := range []string{"nats.token", "nats.user"} {
		if c.set(n) {
			return c.errAt(byName[n], "conflicts with \"nats.users\": the embedded server admits the users of that file only")
		}
	}
	if !c.set("ingest.nats-nkey") && !c.set("nats.nkey") && !c.set("nats.creds") {
		return c.errAt(byName["nats.users"], "the embedded server admits only the users of this file, and ingest has no credentials: set \"ingest.nats-nkey\" to the ingest seed file (configure --nats-credentials writes it)")
	}
	return nil
}

// useCommandCredentials makes the command's own NKey ([ingest] or [sink]
// nats-nkey) the NATS client credential, in place of [nats] nkey: one file
// serves both commands, each with its own role. Other kinds of credential
// given with it were refused by checkOneCredential.
func (c *Config) useCommandCredentials() {
	own := ownNKey(c.only)
	if own == "" || !c.set(own) {
		return
	}
	c.NATS.NKey = byName[own].format(c)
}

// keepOwnKeys resets the [nats] keys of other commands to their defaults:
// one TOML serves every command, and the sink must not create streams with
// ingest's replicas or limits, nor read its embedded server's settings.
func (c *Config) keepOwnKeys(cmd Command) {
	def := Default()
	for _, k := range keys {
		if k.cmds.has(cmd) || k.field == nil || !strings.HasPrefix(k.name, "nats.") {
			continue
		}
		reflect.ValueOf(k.field(c)).Elem().Set(reflect.ValueOf(k.field(&def)).Elem())
		delete(c.sources, k.name)
	}
}

// checkFile requires the file named by k, when set, to exist and be a file.
func (c *Config) checkFile(k *key) error {
	p := k.format(c)
	if p == "" {
		return nil
	}
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist) && k.name == "teleport.identity":
		return c.errAt(k, "file %q does not exist: write it with tctl auth sign --format=file --user=teleport-event-handler --out=%s, or correct the path", p, p)
	case errors.Is(err, os.ErrNotExist) && (k.secretFile || k.name == "nats.users"):
		return c.errAt(k, "file %q does not exist: write the NATS credentials with configure --nats-credentials %s, or correct the path", p, c.configDir())
	case errors.Is(err, os.ErrNotExist):
		return c.errAt(k, "file %q does not exist", p)
	case err != nil:
		return c.errAt(k, "cannot read file %q: %v", p, unwrapPathError(err))
	case st.IsDir():
		return c.errAt(k, "%q is a directory, not a file", p)
	}
	return nil
}

// configDir is the directory of the TOML file, where configure writes the
// credentials; "<dir>" without one.
func (c *Config) configDir() string {
	if c.File == "" {
		return "<dir>"
	}
	return filepath.Dir(c.File)
}

// set reports whether the key has a non-empty value.
func (c *Config) set(name string) bool { return byName[name].format(c) != "" }

// checkTeleportCredentials: an identity file, or cert, key and ca together.
func (c *Config) checkTeleportCredentials(required bool) error {
	trio := []string{"teleport.cert", "teleport.key", "teleport.ca"}
	var have, missing []string
	for _, n := range trio {
		if c.set(n) {
			have = append(have, n)
		} else {
			missing = append(missing, n)
		}
	}
	if c.set("teleport.identity") && len(have) > 0 {
		for _, n := range []string{"teleport.cert", "teleport.key"} {
			if c.set(n) {
				return c.errAt(byName[n], "conflicts with \"teleport.identity\": use an identity file, or a certificate, key and CA, not both")
			}
		}
		return c.errAt(byName["teleport.ca"], "conflicts with \"teleport.identity\": the identity file carries the CA")
	}
	if len(have) > 0 && len(missing) > 0 {
		return c.errAt(byName[have[0]], "needs %s as well (teleport.cert, teleport.key and teleport.ca go together)", quoteJoin(missing))
	}
	if required && len(have) == 0 && !c.set("teleport.identity") {
		return c.requiredErr("no Teleport credentials: set \"teleport.identity\" (--teleport-identity, FDFWD_TELEPORT_IDENTITY), or \"teleport.cert\", \"teleport.key\" and \"teleport.ca\"")
	}
	return nil
}

// TeleportCredentialsError is a configuration error (exit status 2) about
// the Teleport credentials, found by a check outside this package (ingest
// reads them with Teleport's own loader, and asks the server, before
// anything starts). It names the key the credentials came from:
// teleport.identity, or teleport.cert.
func (c *Config) TeleportCredentialsError(err error) error {
	k := byName["teleport.cert"]
	if c.set("teleport.identity") {
		k = byName["teleport.identity"]
	}
	return c.errAt(k, "%v", err)
}

// checkFluentd: a URL to deliver to, client cert and key together, one
// way to give the key's passphrase.
func (c *Config) checkFluentd(required bool) error {
	if required && !c.set("fluentd.url") {
		return c.requiredErr("key \"fluentd.url\" is required: set it in [fluentd] or [forward.fluentd], --fluentd-url or FDFWD_FLUENTD_URL")
	}
	if forwardURL(c.Fluentd.URL) {
		if err := c.checkForward(required); err != nil {
			return err
		}
	} else if required && !c.set("fluentd.session-url") {
		return c.requiredErr("key \"fluentd.session-url\" is required: set it in [fluentd] or [forward.fluentd], --fluentd-session-url or FDFWD_FLUENTD_SESSION_URL")
	}
	if c.set("fluentd.cert") != c.set("fluentd.key") {
		if c.set("fluentd.cert") {
			return c.errAt(byName["fluentd.cert"], "needs \"fluentd.key\" as well")
		}
		return c.errAt(byName["fluentd.key"], "needs \"fluentd.cert\" as well")
	}
	if c.set("fluentd.key-passphrase") && c.set("fluentd.key-passphrase-file") {
		return c.errAt(byName["fluentd.key-passphrase-file"], "conflicts with \"fluentd.key-passphrase\": give the passphrase one way")
	}
	return nil
}

// forwardURL reports whether a fluentd url is for in_forward.
func forwardURL(raw string) bool {
	return strings.HasPrefix(raw, "tls://") || strings.HasPrefix(raw, "tcp://")
}

// checkForward: with an in_forward url, a session-url (if any) to the same
// server, a tag for each kind of event, one way to give each secret, and a
// password only with a user and a shared key.
func (c *Config) checkForward(required bool) error {
	f := c.Fluentd
	if f.SessionURL != "" {
		u, uerr := url.Parse(f.URL)
		s, serr := url.Parse(f.SessionURL)
		if uerr == nil && serr == nil && (u.Scheme != s.Scheme || u.Host != s.Host) {
			return c.errAt(byName["fluentd.session-url"], "%q must name the same in_forward server as \"fluentd.url\" (%s://%s): only its path, the session tag, is used", f.SessionURL, u.Scheme, u.Host)
		}
	}
	if required && f.Tag == "" && pathTag(f.URL) == "" {
		return c.errAt(byName["fluentd.url"], "%q has no tag for audit events: add it as the path (tls://host:24224/test.log) or set \"fluentd.tag\"", f.URL)
	}
	if required && f.SessionTag == "" && pathTag(f.SessionURL) == "" {
		return c.requiredErr("no tag for session events: set \"fluentd.session-tag\" (--fluentd-session-tag; \"session\" gives session.<sid>.log) or \"fluentd.session-url\" with the tag as its path")
	}
	for _, pair := range [][2]string{{"fluentd.shared-key", "fluentd.shared-key-file"}, {"fluentd.password", "fluentd.password-file"}} {
		if c.set(pair[0]) && c.set(pair[1]) {
			return c.errAt(byName[pair[1]], "conflicts with %q: give it one way", pair[0])
		}
	}
	hasPass := c.set("fluentd.password") || c.set("fluentd.password-file")
	if hasPass && !c.set("fluentd.username") {
		return c.errAt(byName["fluentd.username"], "is needed with a fluentd password")
	}
	if c.set("fluentd.username") && !c.set("fluentd.shared-key") && !c.set("fluentd.shared-key-file") {
		return c.errAt(byName["fluentd.username"], "needs a shared key (\"fluentd.shared-key-file\"): in_forward checks users only in the shared-key handshake")
	}
	return nil
}

// pathTag is the tag in a URL's path ("" when none).
func pathTag(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ReplaceAll(strings.Trim(u.Path, "/"), "/", ".")
}

// checkTag: a Fluentd tag is dot-separated parts without spaces or
// wildcards.
func checkTag(c *Config, k *key) error {
	v := k.format(c)
	if v == "" {
		return nil
	}
	if strings.ContainsAny(v, " \t\r\n*/") || strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") {
		return c.errAt(k, "%q is not a tag: dot-separated parts without spaces, '*' or '/'", v)
	}
	return nil
}

// checkNATSAuth: one way to authenticate; TLS cert and key together.
func (c *Config) checkNATSAuth() error {
	var ways []string
	for _, n := range []string{"nats.creds", "nats.nkey", "nats.user", "nats.token"} {
		if c.set(n) {
			ways = append(ways, n)
		}
	}
	if len(ways) > 1 {
		return c.errAt(byName[ways[1]], "conflicts with %q: choose one way to authenticate to NATS", ways[0])
	}
	if c.set("nats.password") && !c.set("nats.user") {
		return c.errAt(byName["nats.password"], "needs \"nats.user\" as well")
	}
	if c.set("nats.user") && !c.set("nats.password") {
		return c.errAt(byName["nats.user"], "needs \"nats.password\" as well")
	}
	if c.set("nats.cert") != c.set("nats.key") {
		if c.set("nats.cert") {
			return c.errAt(byName["nats.cert"], "needs \"nats.key\" as well")
		}
		return c.errAt(byName["nats.key"], "needs \"nats.cert\" as well")
	}
	return nil
}

// requiredErr is a missing-setting error, naming the file when there is one.
func (c *Config) requiredErr(msg string) *Error {
	if c.File != "" {
		return &Error{Where: "config " + c.File, Msg: msg}
	}
	return &Error{Msg: msg}
}

func quoteJoin(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, " and ")
}

// intValue reads any integer field.
func intValue(p any) int64 {
	switch p := p.(type) {
	case *int:
		return int64(*p)
	case *int64:
		return *p
	case *int32:
		return int64(*p)
	}
	return 0
}

func intRange(lo, hi int64) func(*Config, *key) error {
	return func(c *Config, k *key) error {
		if v := intValue(k.field(c)); v < lo || v > hi {
			return c.errAt(k, "must be %d..%d, got %d", lo, hi, v)
		}
		return nil
	}
}

func minDuration(lo time.Duration) func(*Config, *key) error {
	return func(c *Config, k *key) error {
		if d := *k.field(c).(*time.Duration); d < lo {
			return c.errAt(k, "must be at least %s, got %s", lo, d)
		}
		return nil
	}
}

func positive(c *Config, k *key) error {
	if d := *k.field(c).(*time.Duration); d <= 0 {
		return c.errAt(k, "must be a positive duration, got %s", d)
	}
	return nil
}

func nonNegative(c *Config, k *key) error {
	if d := *k.field(c).(*time.Duration); d < 0 {
		return c.errAt(k, "must not be negative, got %s", d)
	}
	return nil
}

func nonEmpty(c *Config, k *key) error {
	if strings.TrimSpace(k.format(c)) == "" {
		return c.errAt(k, "must not be empty")
	}
	return nil
}

func checkMaxBytes(c *Config, k *key) error {
	if v := c.NATS.MaxBytes; v == 0 || v < -1 {
		return c.errAt(k, "must be -1 (unlimited) or a positive number of bytes, got %d", v)
	}
	return nil
}

func checkMaxMsgSize(c *Config, k *key) error {
	if v := c.NATS.MaxMsgSize; v < 1024 || v > 64<<20 {
		return c.errAt(k, "must be 1024..%d (64 MiB), got %d", 64<<20, v)
	}
	return nil
}

// checkHostPort validates host:port with a port in 0..65535 (port 0 picks
// a free port); emptyOK allows "" (off).
func checkHostPort(emptyOK bool) func(*Config, *key) error {
	return func(c *Config, k *key) error {
		v := k.format(c)
		if v == "" {
			if emptyOK {
				return nil
			}
			return c.errAt(k, "must not be empty")
		}
		if msg := hostPortProblem(v); msg != "" {
			return c.errAt(k, "%s", msg)
		}
		return nil
	}
}

// hostPortProblem says what is wrong with a host:port, "" when nothing.
func hostPortProblem(v string) string {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Sprintf("must be host:port, got %q", v)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("port must be 0..65535, got %q", port)
	}
	return ""
}

func checkTeleportAddr(c *Config, k *key) error {
	if len(c.Teleport.Addr) == 0 {
		return c.errAt(k, "must not be empty")
	}
	for _, a := range c.Teleport.Addr {
		if strings.Contains(a, "://") {
			return c.errAt(k, "must be host:port without a scheme, got %q", a)
		}
		if msg := hostPortProblem(a); msg != "" {
			return c.errAt(k, "%s", msg)
		}
	}
	return nil
}

// checkFluentdURL requires an absolute https URL, or http with insecure-http.
func checkFluentdURL(c *Config, k *key) error {
	raw := k.format(c)
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return c.errAt(k, "malformed URL %q: %v", raw, unwrapURLError(err))
	}
	if u.Host == "" {
		return c.errAt(k, "must be an absolute URL such as https://fluentd:8888/test.log, got %q", raw)
	}
	switch u.Scheme {
	case "https", "tls":
	case "http":
		if !c.Fluentd.InsecureHTTP {
			return c.errAt(k, "%q is plain http: use https, or set insecure-http = true (--insecure-http) to allow it", raw)
		}
	case "tcp":
		if !c.Fluentd.InsecureTCP {
			return c.errAt(k, "%q is plain tcp: use tls://, or set insecure-tcp = true (--insecure-tcp) to allow it", raw)
		}
	default:
		return c.errAt(k, "scheme must be https (in_http) or tls (in_forward), got %q", u.Scheme)
	}
	if msg := portProblem(u); msg != "" {
		return c.errAt(k, "%s", msg)
	}
	return nil
}

func portProblem(u *url.URL) string {
	p := u.Port()
	if p == "" {
		return ""
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("port must be 1..65535, got %q", p)
	}
	return ""
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// checkNATSURL validates each URL of the comma-separated list.
func checkNATSURL(c *Config, k *key) error {
	for _, raw := range splitList(c.NATS.URL) {
		if !strings.Contains(raw, "://") {
			if msg := hostPortProblem(raw); msg != "" {
				return c.errAt(k, "%q: must be a URL such as nats://host:4222 or host:port", raw)
			}
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			return c.errAt(k, "malformed URL %q: %v", redactURL(raw), unwrapURLError(err))
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return c.errAt(k, "scheme must be nats, tls, ws or wss, got %q", u.Scheme)
		}
		if u.Host == "" {
			return c.errAt(k, "URL %q has no host", redactURL(raw))
		}
		if msg := portProblem(u); msg != "" {
			return c.errAt(k, "%s", msg)
		}
	}
	return nil
}

// checkName validates a JetStream stream, consumer or bucket name.
func checkName(c *Config, k *key) error {
	v := k.format(c)
	if v == "" {
		return c.errAt(k, "must not be empty")
	}
	if strings.ContainsAny(v, " \t\r\n.*>/\\") {
		return c.errAt(k, "%q must not contain spaces, '.', '*', '>', '/' or '\\'", v)
	}
	return nil
}

// checkSubjects validates filter subjects: under audit.> or session.>.
func checkSubjects(c *Config, k *key) error {
	for _, s := range c.Sink.FilterSubjects {
		if !strings.HasPrefix(s, "audit.") && !strings.HasPrefix(s, "session.") {
			return c.errAt(k, "subject %q must start with \"audit.\" or \"session.\"", s)
		}
		if strings.Contains(s, "..") || strings.HasSuffix(s, ".") || strings.ContainsAny(s, " \t") {
			return c.errAt(k, "subject %q is malformed", s)
		}
	}
	return nil
}

func checkBaseName(c *Config, k *key) error {
	v := k.format(c)
	if v == "" || strings.ContainsAny(v, `/\`) || v == "." || v == ".." {
		return c.errAt(k, "must be a file base name such as \"ca\", got %q", v)
	}
	return nil
}

func checkIPs(c *Config, k *key) error {
	for _, ip := range c.Configure.IPs {
		if net.ParseIP(ip) == nil {
			return c.errAt(k, "%q is not an IP address", ip)
		}
	}
	return nil
}

func checkLength(c *Config, k *key) error {
	if l := c.Configure.Length; l != 2048 && l != 4096 {
		return c.errAt(k, "must be 2048 or 4096, got %d", l)
	}
	return nil
}

func checkKeyType(c *Config, k *key) error {
	switch c.Configure.KeyType {
	case "rsa", "ecdsa":
		return nil
	}
	return c.errAt(k, "must be rsa or ecdsa, got %q", c.Configure.KeyType)
}

// redactURL hides a URL's password.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if i := strings.Index(raw, "@"); i >= 0 && strings.Contains(raw[:i], ":") {
			return "[redacted]" + raw[i:]
		}
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "redacted")
	}
	return u.String()
}

func checkRecreateConsumer(c *Config, k *key) error {
	switch c.Sink.RecreateConsumer {
	case "", "resume", "all":
		return nil
	}
	return c.errAt(k, "must be \"resume\" or \"all\" (or empty), got %q", c.Sink.RecreateConsumer)
}
