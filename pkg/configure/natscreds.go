package configure

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// NATS credential files configure writes: one NKey seed per role, as `nats
// --nkey FILE` reads it, and the embedded server's users file with the
// public keys. All 0600.
const (
	NATSUsersFile = "nats-users.toml"
)

// NATSSeedFile is the seed file of a role: nats-ingest.nk,
// nats-fluentd-sink.nk, nats-reader.nk.
func NATSSeedFile(role bus.Role) string { return "nats-" + string(role) + ".nk" }

// natsFileNames lists the credential files in writing order.
func natsFileNames() []string {
	var names []string
	for _, r := range bus.Roles {
		names = append(names, NATSSeedFile(r))
	}
	return append(names, NATSUsersFile)
}

// natsCredentials makes a key per role and the users file naming them,
// and returns the users (their public keys) too.
func natsCredentials() ([]output, []bus.User, error) {
	var outs []output
	var users []bus.User
	for _, r := range bus.Roles {
		seed, pub, err := bus.NewUserKey()
		if err != nil {
			return nil, nil, err
		}
		outs = append(outs, output{NATSSeedFile(r), seed, 0o600})
		users = append(users, bus.User{Role: r, NKey: pub})
	}
	data, err := bus.RenderUsers(users)
	if err != nil {
		return nil, nil, err
	}
	return append(outs, output{NATSUsersFile, data, 0o600}), users, nil
}

// natsTOMLKeys are the TOML keys that point at the credentials, by section.
func natsTOMLKeys(p paths) []struct{ section, key, value string } {
	return []struct{ section, key, value string }{
		{"nats", "users", p.file(NATSUsersFile)},
		{"ingest", "nats-nkey", p.file(NATSSeedFile(bus.RoleIngest))},
		{"sink", "nats-nkey", p.file(NATSSeedFile(bus.RoleSink))},
	}
}

// AddNATSCredentials closes the bus of an existing configure directory
// (`configure --nats-credentials <dir>`): it writes a seed file per role
// and the users file, and adds their paths to the directory's TOML
// ([nats] users, [ingest] and [sink] nats-nkey). Certificates, keys and
// every other setting are left as they are. Without Force it refuses when
// a credential file exists or the TOML already names credentials. The new
// TOML is checked before anything is written.
func AddNATSCredentials(ctx context.Context, o Options) (Result, error) {
	if o.OutDir == "" {
		return Result{}, errors.New("output directory is required")
	}
	dir, err := filepath.Abs(o.OutDir)
	if err != nil {
		return Result{}, fmt.Errorf("output directory %q: %w", o.OutDir, err)
	}
	tomlPath := filepath.Join(dir, TOMLFile)
	old, err := os.ReadFile(tomlPath)
	if err != nil {
		return Result{}, fmt.Errorf("read %s (is %s a directory configure wrote?): %w", tomlPath, dir, err)
	}
	if !o.Force {
		if err := refuseExisting(dir, natsFileNames()); err != nil {
			return Result{}, err
		}
	}
	p := paths{dir: dir, o: o}
	updated, err := addTOMLKeys(old, natsTOMLKeys(p), o.Force)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", tomlPath, err)
	}
	if err := checkTOMLKeys(updated, tomlPath, p); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	outs, _, err := natsCredentials()
	if err != nil {
		return Result{}, err
	}
	res := Result{Dir: dir}
	for _, out := range outs {
		path := filepath.Join(dir, out.name)
		if err := certs.WriteFile(path, out.data, out.mode); err != nil {
			return res, err
		}
		res.Files = append(res.Files, path)
	}
	st, err := os.Stat(tomlPath)
	if err != nil {
		return res, err
	}
	if err := certs.WriteFile(tomlPath, updated, st.Mode().Perm()); err != nil {
		return res, err
	}
	res.Files = append(res.Files, tomlPath)
	w := &errWriter{w: o.Out}
	if w.w != nil {
		w.printf("Wrote NATS credentials to %s:\n", dir)
		for _, f := range res.Files {
			w.printf("  %s\n", filepath.Base(f))
		}
		w.printf("\nRestart ingest and fluentd-sink: the embedded NATS server now admits only these keys.\nOther readers connect with %s (nats --nkey %s).\n",
			NATSSeedFile(bus.RoleReader), p.file(NATSSeedFile(bus.RoleReader)))
	}
	return res, w.err
}

// addTOMLKeys sets each key in its section of a TOML text: the line goes
// right under the section's header (a section that is missing is added at
// the end). A key already set is an error unless force, which replaces it.
// Everything else keeps its place, comments included.
func addTOMLKeys(data []byte, keys []struct{ section, key, value string }, force bool) ([]byte, error) {
	lines := strings.Split(string(data), "\n")
	for _, k := range keys {
		line := k.key + " = " + tomlString(k.value)
		start, end := sectionRange(lines, k.section)
		if start < 0 {
			if n := len(lines); n > 0 && lines[n-1] == "" {
				lines = lines[:n-1]
			}
			lines = append(lines, "", "["+k.section+"]", line, "")
			continue
		}
		if i := keyLine(lines[start+1:end], k.key); i >= 0 {
			if !force {
				return nil, fmt.Errorf("[%s] %s is set already (use --force to replace it)", k.section, k.key)
			}
			lines[start+1+i] = line
			continue
		}
		lines = append(lines[:start+1], append([]string{line}, lines[start+1:]...)...)
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// sectionRange finds [section]'s header line and the line where the next
// section starts (or len(lines)); -1 when the section is missing.
func sectionRange(lines []string, section string) (int, int) {
	start := -1
	for i, l := range lines {
		h, ok := header(l)
		if !ok {
			continue
		}
		if start >= 0 {
			return start, i
		}
		if h == section {
			start = i
		}
	}
	return start, len(lines)
}

// header returns the table name of a "[name]" line (comments allowed).
func header(line string) (string, bool) {
	l := strings.TrimSpace(line)
	if i := strings.Index(l, "#"); i >= 0 {
		l = strings.TrimSpace(l[:i])
	}
	if !strings.HasPrefix(l, "[") || strings.HasPrefix(l, "[[") || !strings.HasSuffix(l, "]") {
		return "", false
	}
	return strings.TrimSpace(l[1 : len(l)-1]), true
}

// keyLine is the index of the line setting key (not a comment), or -1.
func keyLine(lines []string, key string) int {
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(l, key); ok {
			if r := strings.TrimSpace(rest); strings.HasPrefix(r, "=") {
				return i
			}
		}
	}
	return -1
}

// checkTOMLKeys parses the new TOML and checks that it names the
// credentials, so a layout the line edit did not foresee (dotted keys, an
// inline table) is an error rather than a file that leaves the bus open.
func checkTOMLKeys(data []byte, name string, p paths) error {
	cfg, err := config.Decode(data, name)
	if err != nil {
		return fmt.Errorf("the TOML with NATS credentials added does not load (nothing was written): %w", err)
	}
	want := natsTOMLKeys(p)
	got := []string{cfg.NATS.Users, cfg.Ingest.NATSNKey, cfg.Sink.NATSNKey}
	for i, k := range want {
		if got[i] != k.value {
			return fmt.Errorf("%s: could not set [%s] %s (nothing was written): set it by hand to %q", name, k.section, k.key, k.value)
		}
	}
	return nil
}
