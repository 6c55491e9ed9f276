package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/urfave/cli/v2"
)

// srcKind is where a value came from.
type srcKind int

const (
	srcDefault srcKind = iota
	srcFile
	srcEnv
	srcFlag
	srcArg
)

// source is where a key's value came from: the file (and the TOML
// spelling used), the environment variable, the flag or the argument.
type source struct {
	kind srcKind
	// name is the file path, variable, flag or argument name.
	name string
	// spelling is the TOML key as written in the file.
	spelling string
}

// Error is a configuration problem: a bad key, value or combination. Its
// text is one line naming the file, variable or flag, and the key.
// NewApp exits with status 2 on it.
type Error struct {
	// Where is "config <path>", "environment variable <NAME>",
	// "flag --<name>", "argument <name>", or "" for a default value.
	Where string
	// Key is the TOML key concerned, "" when none.
	Key string
	// Msg says what is wrong and, where possible, what is expected.
	Msg string
}

// Error formats as `config /x/y.toml: key "nats.replicas": must be 1..5, got 7`.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Where != "" {
		b.WriteString(e.Where)
		b.WriteString(": ")
	}
	if e.Key != "" {
		fmt.Fprintf(&b, "key %q: ", e.Key)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// errAt builds an Error for key k attributed to where its value came from.
func (c *Config) errAt(k *key, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	src := c.sources[k.name]
	switch src.kind {
	case srcFile:
		return &Error{Where: "config " + src.name, Key: src.spelling, Msg: msg}
	case srcEnv:
		return &Error{Where: "environment variable " + src.name, Key: k.name, Msg: msg}
	case srcFlag:
		return &Error{Where: "flag --" + src.name, Msg: msg}
	case srcArg:
		return &Error{Where: "argument " + src.name, Msg: msg}
	}
	if c.File != "" {
		return &Error{Where: "config " + c.File, Key: k.name, Msg: msg}
	}
	return &Error{Key: k.name, Msg: msg}
}

// fileErr is an Error about the file as a whole.
func fileErr(path, format string, args ...any) *Error {
	return &Error{Where: "config " + path, Msg: fmt.Sprintf(format, args...)}
}

// Load builds cmd's configuration from, in increasing precedence, the
// defaults, the TOML file (--config or FDFWD_CONFIG), the environment
// (FDFWD_*, and FDWRD_* for teleport-event-handler's keys) and the flags
// given on the command line, and validates it. For Configure it also reads
// the positional arguments into Config.Configure. Errors are *Error (or
// wrap one) with a one-line message naming the key and where it was set.
func Load(c *cli.Context, cmd Command) (*Config, error) {
	return load(c, cmd, true)
}

// load is Load; without required, missing credentials and URLs are not
// errors (for subcommands that use only part of the configuration).
func load(c *cli.Context, cmd Command, required bool) (*Config, error) {
	cfg := Default()
	cfg.only = 1 << cmd
	cfg.sources = map[string]source{}
	if cmd != Configure {
		if path := configPath(c); path != "" {
			if err := cfg.readFile(path); err != nil {
				return nil, err
			}
		}
	}
	cfg.keepOwnKeys(cmd)
	if err := cfg.applyEnv(cmd); err != nil {
		return nil, err
	}
	if err := cfg.applyFlags(c, cmd); err != nil {
		return nil, err
	}
	if err := cfg.applyArgs(c.Args().Slice(), cmd); err != nil {
		return nil, err
	}
	cfg.resolve()
	if err := cfg.validate(1<<cmd, true, required); err != nil {
		return nil, err
	}
	cfg.useCommandCredentials()
	return &cfg, nil
}

// LoadFile is Load without flags and environment: the defaults and the
// TOML file at path, validated for cmd.
func LoadFile(path string, cmd Command) (*Config, error) {
	cfg := Default()
	cfg.only = 1 << cmd
	cfg.sources = map[string]source{}
	if err := cfg.readFile(path); err != nil {
		return nil, err
	}
	cfg.keepOwnKeys(cmd)
	cfg.resolve()
	if err := cfg.validate(1<<cmd, true, true); err != nil {
		return nil, err
	}
	cfg.useCommandCredentials()
	return &cfg, nil
}

// Decode parses TOML text (name is used in messages) over the defaults and
// checks every key's type and range, for all commands, without looking at
// the files the keys name or at what a command requires. It suits checking
// a generated file before the files it names exist.
func Decode(data []byte, name string) (*Config, error) {
	cfg := Default()
	cfg.sources = map[string]source{}
	cfg.File = name
	if err := cfg.decodeTOML(data, name); err != nil {
		return nil, err
	}
	cfg.resolve()
	if err := cfg.validate(forIngest|forSink, false, false); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// configPath is --config, else FDFWD_CONFIG (or FDWRD_CONFIG).
func configPath(c *cli.Context) string {
	if fc := givenIn(c, configFlag); fc != nil {
		return fc.String(configFlag)
	}
	for _, v := range configEnv {
		if s := os.Getenv(v); s != "" {
			return s
		}
	}
	return ""
}

func (c *Config) readFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &Error{Where: "config " + path, Msg: "file does not exist"}
		}
		return &Error{Where: "config " + path, Msg: fmt.Sprintf("cannot read: %v", unwrapPathError(err))}
	}
	c.File = path
	return c.decodeTOML(data, path)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// decodeTOML applies the file's values. teleport-event-handler's layouts
// are accepted: [fluentd] or [forward.fluentd], top-level lock-* or [lock].
func (c *Config) decodeTOML(data []byte, path string) error {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fileErr(path, "line %d, column %d: %s", row, col, strings.TrimPrefix(de.Error(), "toml: "))
		}
		return fileErr(path, "%s", strings.TrimPrefix(err.Error(), "toml: "))
	}
	leaves := map[string]any{}
	flatten("", doc, leaves)
	names := make([]string, 0, len(leaves))
	for n := range leaves {
		names = append(names, n)
	}
	sort.Strings(names)

	for _, n := range names {
		if byTOMLName[n] == nil {
			msg := fmt.Sprintf("unknown key %q", n)
			if s := suggest(n); s != "" {
				msg += fmt.Sprintf(", did you mean %q?", s)
			} else if s := misplaced(n); s != "" {
				msg += fmt.Sprintf(", did you mean %q? (top-level keys go before the first [section])", s)
			}
			return &Error{Where: "config " + path, Msg: msg}
		}
	}
	seen := map[*key]string{}
	for _, n := range names {
		k := byTOMLName[n]
		raw := leaves[n]
		if prev, ok := seen[k]; ok {
			if fmt.Sprint(leaves[prev]) != fmt.Sprint(raw) {
				return fileErr(path, "keys %q and %q are the same setting with different values (%v and %v): keep one",
					prev, n, show(leaves[prev]), show(raw))
			}
			continue
		}
		seen[k] = n
		if err := k.setFromTOML(c, raw); err != nil {
			return &Error{Where: "config " + path, Key: n, Msg: err.Error()}
		}
		c.sources[k.name] = source{kind: srcFile, name: path, spelling: n}
	}
	return nil
}

// show renders a raw TOML value for a message.
func show(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

// flatten turns nested tables into dotted names. A table whose own name is
// a key stays a leaf, so that its type error is reported rather than its
// contents being called unknown.
func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		name := k
		if prefix != "" {
			name = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && byTOMLName[name] == nil {
			if len(sub) == 0 {
				// An empty table ([fluentd] with nothing in it) is harmless
				// if it is a known section.
				if !isSection(name) {
					out[name] = v
				}
				continue
			}
			flatten(name, sub, out)
			continue
		}
		out[name] = v
	}
}

// isSection reports whether some key lives under name.
func isSection(name string) bool {
	for n := range byTOMLName {
		if strings.HasPrefix(n, name+".") {
			return true
		}
	}
	return false
}

// applyEnv applies cmd's environment variables; an empty variable counts
// as unset.
func (c *Config) applyEnv(cmd Command) error {
	for _, k := range keys {
		if !k.cmds.has(cmd) {
			continue
		}
		for _, v := range k.envVars() {
			s := os.Getenv(v)
			if s == "" {
				continue
			}
			if err := k.setFromString(c, s); err != nil {
				return &Error{Where: "environment variable " + v, Key: k.name, Msg: err.Error()}
			}
			c.sources[k.name] = source{kind: srcEnv, name: v}
			break
		}
	}
	return nil
}

// applyFlags applies the flags given on the command line.
func (c *Config) applyFlags(ctx *cli.Context, cmd Command) error {
	for _, k := range keys {
		if !k.cmds.has(cmd) {
			continue
		}
		fc := givenIn(ctx, k.flag)
		if fc == nil {
			continue
		}
		if err := k.setFromFlag(c, fc); err != nil {
			return &Error{Where: "flag --" + k.flag, Msg: err.Error()}
		}
		c.sources[k.name] = source{kind: srcFlag, name: k.flag}
	}
	return nil
}

// givenIn is the innermost of c and its parents (a subcommand's, then the
// app's) whose part of the command line gave flag name, or nil: a flag
// given after a subcommand name wins over the same flag given before it.
func givenIn(c *cli.Context, name string) *cli.Context {
	for _, cc := range c.Lineage() {
		if cc.IsSet(name) {
			return cc
		}
	}
	return nil
}

// configureArgs are configure's positional arguments after <out-dir>, as
// teleport-event-handler had them.
var configureArgs = []struct {
	name string
	key  string
}{
	{"teleport-addr", ""},
	{"ca-name", "configure.ca-name"},
	{"server-name", "configure.server-name"},
	{"client-name", "configure.client-name"},
}

// applyArgs reads configure's positional arguments; the other commands
// take none.
func (c *Config) applyArgs(args []string, cmd Command) error {
	if cmd != Configure {
		if len(args) > 0 {
			return &UsageError{Err: fmt.Errorf("unexpected argument %q (%s takes flags only)", args[0], cmd)}
		}
		return nil
	}
	if len(args) == 0 || strings.TrimSpace(args[0]) == "" {
		return &UsageError{Err: errors.New("missing argument <out-dir>: usage: configure <out-dir> [teleport-addr [ca-name [server-name [client-name]]]]")}
	}
	if len(args) > 1+len(configureArgs) {
		return &UsageError{Err: fmt.Errorf("too many arguments: %q is the 6th; usage: configure <out-dir> [teleport-addr [ca-name [server-name [client-name]]]]", args[5])}
	}
	for _, a := range args {
		if strings.HasPrefix(a, "-") && a != "-" {
			return &UsageError{Err: fmt.Errorf("flag %q after the arguments: flags go before <out-dir>", a)}
		}
	}
	c.Configure.OutDir = args[0]
	for i, a := range args[1:] {
		spec := configureArgs[i]
		if spec.key == "" {
			c.Configure.TeleportAddr = a
			continue
		}
		k := byName[spec.key]
		if src := c.sources[k.name]; src.kind == srcFlag || src.kind == srcEnv {
			if cur := k.format(c); cur != a {
				return &UsageError{Err: fmt.Errorf("argument %s %q and %s %q disagree: give one", spec.name, a, describeSource(src), cur)}
			}
		}
		*k.field(c).(*string) = a
		c.sources[k.name] = source{kind: srcArg, name: spec.name}
	}
	return nil
}

func describeSource(s source) string {
	switch s.kind {
	case srcFlag:
		return "flag --" + s.name
	case srcEnv:
		return "environment variable " + s.name
	case srcFile:
		return "config " + s.name
	}
	return s.name
}

// resolve fills values defined in terms of others.
func (c *Config) resolve() {
	if c.Ingest.SessionConcurrency == 0 && c.Concurrency > 0 {
		c.Ingest.SessionConcurrency = c.Concurrency
	}
	// The top-level metrics-addr of earlier releases is ingest's: it wins
	// over ingest.metrics-addr when set with higher precedence.
	if old, cur := c.sources["metrics-addr"], c.sources["ingest.metrics-addr"]; old.kind != srcDefault && old.kind > cur.kind {
		c.Ingest.MetricsAddr = c.MetricsAddr
		c.sources["ingest.metrics-addr"] = old
	}
}
